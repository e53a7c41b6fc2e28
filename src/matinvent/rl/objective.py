"""The per-step policy objective of Eq. 17 and its stabilisers, as pure tensor functions.

For a trajectory with (filtered) reward r the paper's loss at one reverse step is

    −α·r·log p_θ(M_{t−1} | M_t) + β·(λ − r)·KL(p_θ ‖ p_prior)(M_t)

summed over the stochastic components F_corr, F, L, A. The switches of :class:`RLConfig` change it
as follows (each at its paper value under ``preset: paper``; the defaults are ours, docs/rl-settings.md):

- ``logp_reduce: mean`` — each component's log-prob and KL is divided by its dimension count
  (3·n for F_corr and F, 9 for L, n for masked types, n·K for Gaussian one-hots of width K), so
  no component outweighs the others by its size or its near-deterministic steps;
- ``sigma_floor`` — every Gaussian σ used in log-probs and KLs is at least this value, which
  bounds the 1/σ² blow-up of the near-deterministic last steps;
- ``baseline`` — the advantage A in place of r: ``none`` (A = r), ``batch`` (A = r − mean) or
  ``normalize`` (A = (r − mean)/std, clipped to ±``adv_clip``; r − mean, clipped, when the batch's
  rewards are all equal), mean/std over the batch's evaluated crystals;
- ``ppo_clip`` ε > 0 — the PG term becomes PPO's −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) with
  ρ = exp(log p_θ − log p_old), log p_old stored when the trajectory was sampled (so several
  inner epochs per batch stay sound); ``replay_pg`` says how replayed trajectories enter the PG;
- ``kl_weights`` — a weight per component of the KL.

Every function works on (B, C) tensors, C = len(COMPONENTS), zeros where a component is absent.
:func:`step_loss` is the whole of Eq. 17 at one step; the methods of :mod:`matinvent.rl.methods`
draw the steps, compute the log-probs and KLs under the agent and the prior, and apply it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from matinvent.prior.diffusion_config import COMPONENTS
from matinvent.prior.likelihood import kl_terms, log_prob_terms
from matinvent.prior.transitions import TransitionParams

C = len(COMPONENTS)


def floored(p: TransitionParams, floor: float) -> TransitionParams:
    """``p`` with every non-zero Gaussian σ raised to at least ``floor`` (0: unchanged)."""
    if floor <= 0:
        return p

    def up(s: float) -> float:
        return max(s, floor) if s > 0 else s

    return dataclasses.replace(p, std_F_corr=up(p.std_F_corr), std_F=up(p.std_F), std_L=up(p.std_L), std_A=up(p.std_A))


def component_dims(num_atoms: torch.Tensor, dtype: torch.dtype, type_dims: int = 1) -> torch.Tensor:
    """(B, C) dimension count of each component: 3n (F_corr, F), 9 (L), n·``type_dims`` (A).

    ``type_dims`` is 1 for masked types (one categorical per atom) and the one-hot width for
    Gaussian types (a Gaussian per one-hot entry).
    """
    n = num_atoms.to(dtype)
    dims = {"F_corr": 3 * n, "F": 3 * n, "L": torch.full_like(n, 9.0), "A": n * type_dims}
    return torch.stack([dims[c] for c in COMPONENTS], dim=-1)


def _stack(terms: dict[str, torch.Tensor], B: int, like: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros(B, dtype=like.dtype, device=like.device)
    return torch.stack([terms.get(c, zero) for c in COMPONENTS], dim=-1)


def component_log_probs(
    p: TransitionParams, tr, batch: torch.Tensor, num_atoms: torch.Tensor, floor: float = 0.0, reduce: str = "sum"
) -> torch.Tensor:
    """(B, C) log-prob of the stored action ``tr`` per component, floored and reduced."""
    B = num_atoms.shape[0]
    out = _stack(log_prob_terms(floored(p, floor), tr, batch, B), B, tr.L)
    return out / component_dims(num_atoms, out.dtype, type_dims(p)) if reduce == "mean" else out


def component_kls(
    p: TransitionParams,
    q: TransitionParams,
    batch: torch.Tensor,
    num_atoms: torch.Tensor,
    floor: float = 0.0,
    reduce: str = "sum",
) -> torch.Tensor:
    """(B, C) KL(p ‖ q) per component, floored (same σ in both) and reduced."""
    B = num_atoms.shape[0]
    out = _stack(kl_terms(floored(p, floor), floored(q, floor), batch, B), B, p.mean_L)
    return out / component_dims(num_atoms, out.dtype, type_dims(p)) if reduce == "mean" else out


def type_dims(p: TransitionParams) -> int:
    return p.mean_A.shape[-1] if p.mean_A is not None else 1


REWARD_TIE = 1e-8  # reward differences (and a batch std) below this count as none


def advantages(rewards: np.ndarray, reference: np.ndarray, mode: str, clip: float = 5.0) -> np.ndarray:
    """The PG weight of each trajectory: r (``none``), r − mean (``batch``), (r − mean)/std clipped (``normalize``).

    ``reference`` are the batch's evaluated (filtered) rewards that define mean and std; ``rewards``
    may hold more than those (replayed crystals). With ``normalize`` and a batch of equal rewards
    (std < 1e-8) there is no scale to divide by: the weight is then r − mean, clipped to ±``clip``,
    so the batch's own crystals get 0 but a replayed crystal above the batch (say 0.8 against an
    all-zero batch) still gets a positive weight.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if mode == "none" or len(ref) == 0:
        return rewards
    centred = rewards - float(ref.mean())
    if mode == "batch":
        return centred
    if mode == "normalize":
        std = float(ref.std())
        if std < REWARD_TIE:
            return np.clip(np.where(np.abs(centred) < REWARD_TIE, 0.0, centred), -clip, clip)
        return np.clip(centred / std, -clip, clip)
    raise ValueError(f"unknown baseline mode {mode!r}")


LOG_RATIO_MAX = 20.0


DUAL_CLIP = 3.0  # dual-clip PPO (Ye et al. 2020): with A < 0 the loss never exceeds −c·A (ρ > c gives no gradient)


def policy_loss(
    logp: torch.Tensor,
    adv: torch.Tensor,
    logp_old: torch.Tensor | None = None,
    clip: float = 0.0,
    use_ratio: torch.Tensor | None = None,
    ratio_logp: torch.Tensor | None = None,
    dual_clip: float = DUAL_CLIP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) PG loss and (B,) ratio for log-probs ``logp`` (summed over the PG components).

    Without ``clip`` the loss is −A·log p (the paper; ratio reported as exp(log p − log p_old) when
    ``logp_old`` is given, else 1). With ``clip`` ε the loss is PPO's −min(ρA, clip(ρ, 1−ε, 1+ε)A), bounded
    by −``dual_clip``·A where A < 0, on the rows of ``use_ratio`` (default: all), −A·log p elsewhere.

    ρ is an importance ratio: exp(``ratio_logp`` − ``logp_old``), where ``ratio_logp`` (default ``logp``) and
    ``logp_old`` are the true, summed log-probabilities of the step. ``logp`` may be scaled differently (per
    dimension: ``logp_reduce: mean``): the gradient is then −ρ·A·∇``logp`` on the rows where the unclipped
    branch is taken, 0 elsewhere, and the loss's value is PPO's. With ``ratio_logp`` None that is PPO exactly.
    """
    if logp_old is None:
        return -adv * logp, torch.ones_like(logp)
    now = logp if ratio_logp is None else ratio_logp
    if use_ratio is not None:  # rows without stored log-probs: ratio 1, so no exp overflow (a NaN gradient) there
        logp_old = torch.where(use_ratio, logp_old, now.detach())
    # log-ratios beyond ±LOG_RATIO_MAX (summed log-probs of near-deterministic steps) would overflow exp
    ratio = torch.exp(torch.clamp(now.detach() - logp_old, -LOG_RATIO_MAX, LOG_RATIO_MAX))
    if clip <= 0:
        return -adv * logp, ratio
    value = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    value = torch.where(adv < 0, torch.minimum(value, -dual_clip * adv), value)
    clipped = ((adv > 0) & (ratio > 1 + clip)) | ((adv < 0) & (ratio < 1 - clip)) | ((adv < 0) & (ratio > dual_clip))
    weight = torch.where(clipped, torch.zeros_like(ratio), ratio)
    ppo = value + (-adv * weight * (logp - logp.detach()))  # PPO's value, gradient −ρA∇log p where unclipped
    if use_ratio is None:
        return ppo, ratio
    return torch.where(use_ratio, ppo, -adv * logp), ratio


def kl_loss(kl: torch.Tensor, rewards: torch.Tensor, lam: float, weights: torch.Tensor) -> torch.Tensor:
    """(B,) (λ − r)·Σ_c w_c KL_c for a (B, C) KL."""
    return (lam - rewards) * (kl * weights).sum(-1)


def step_loss(
    logp: torch.Tensor,
    adv: torch.Tensor,
    logp_old: torch.Tensor | None,
    clip: float,
    use_ratio: torch.Tensor,
    pg_on: torch.Tensor,
    alpha: float,
    kl: torch.Tensor | None = None,
    rewards: torch.Tensor | None = None,
    beta: float = 0.0,
    lam: float = 1.0,
    kl_weights: torch.Tensor | None = None,
    ratio_logp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 17 at one reverse step, per trajectory: α·PG (:func:`policy_loss`, on the rows of ``pg_on``)
    plus, with a ``kl``, β·(λ − r)·Σ_c w_c KL_c (:func:`kl_loss`); and the ratio of :func:`policy_loss`
    (from ``ratio_logp``, the summed log-probs, when ``logp`` is scaled otherwise)."""
    pg, ratio = policy_loss(logp, adv, logp_old, clip, use_ratio=use_ratio, ratio_logp=ratio_logp)
    loss = alpha * pg * pg_on
    if kl is not None:
        loss = loss + beta * kl_loss(kl, rewards, lam, kl_weights)
    return loss, ratio
