"""Exact log-probabilities and KLs of one reverse step of :class:`~matinvent.prior.model.CrystalDiffusion`.

Per stochastic component (``F_corr``, ``F``, ``L``, ``A``; see :data:`matinvent.prior.diffusion_config.COMPONENTS`)
they are exact Gaussian, wrapped-normal or (masked types) categorical terms of the stored
:class:`~matinvent.prior.transitions.TransitionParams`; the model-level helpers recompute the
parameters with the current weights so the result is differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from matinvent.crystal.batch import scatter_sum
from matinvent.diffusion import (
    absorbing_log_prob,
    gaussian_kl_same_std,
    gaussian_log_prob,
    wrapped_normal_kl_same_std,
    wrapped_normal_log_prob,
)
from matinvent.prior import type_constraints as tc
from matinvent.prior.diffusion_config import COMPONENTS
from matinvent.prior.transitions import Transition, TransitionParams

if TYPE_CHECKING:
    from matinvent.prior.model import CrystalDiffusion


def _per_crystal(x: torch.Tensor, batch: torch.Tensor, B: int) -> torch.Tensor:
    return scatter_sum(x.flatten(1).sum(-1), batch, B)


def log_prob_terms(p: TransitionParams, tr: Transition, batch: torch.Tensor, B: int) -> dict[str, torch.Tensor]:
    """(B,) log-density of a stored action per stochastic component (``F_corr``, ``F``, ``L``, ``A``).

    Deterministic components (σ = 0, e.g. the last step) are left out.
    """
    terms = {"F_corr": _per_crystal(wrapped_normal_log_prob(tr.F_mid, p.mean_F_corr, p.std_F_corr), batch, B)}
    if p.std_F > 0:
        terms["F"] = _per_crystal(wrapped_normal_log_prob(tr.F_next, p.mean_F, p.std_F), batch, B)
    if p.std_L > 0:
        terms["L"] = gaussian_log_prob(tr.L_next, p.mean_L, p.std_L).flatten(1).sum(-1)
    if p.std_A > 0:
        terms["A"] = _per_crystal(gaussian_log_prob(tr.A_next, p.mean_A, p.std_A), batch, B)
    if p.logp_A is not None:
        logp_A = tc.masked_log_probs(p.logp_A, p.allowed_A)  # renormalised over the allowed elements
        lp = absorbing_log_prob(tr.A_next.argmax(-1), logp_A, p.masked_A, p.unmask_A)
        terms["A"] = scatter_sum(lp, batch, B)
    return terms


def kl_terms(p: TransitionParams, q: TransitionParams, batch: torch.Tensor, B: int) -> dict[str, torch.Tensor]:
    """(B,) exact KL(p ‖ q) per stochastic component (the stds of ``p`` are shared by ``q``).

    ``F_corr`` and ``F`` are KLs of wrapped normals on [0, 1) (:func:`wrapped_normal_kl_same_std`),
    summed over coordinates; ``L`` and Gaussian ``A`` are Gaussian KLs; masked ``A`` is categorical.
    """
    terms = {"F_corr": _per_crystal(wrapped_normal_kl_same_std(p.mean_F_corr, q.mean_F_corr, p.std_F_corr), batch, B)}
    if p.std_F > 0:
        terms["F"] = _per_crystal(wrapped_normal_kl_same_std(p.mean_F, q.mean_F, p.std_F), batch, B)
    if p.std_L > 0:
        terms["L"] = gaussian_kl_same_std(p.mean_L, q.mean_L, p.std_L).flatten(1).sum(-1)
    if p.std_A > 0:
        terms["A"] = _per_crystal(gaussian_kl_same_std(p.mean_A, q.mean_A, p.std_A), batch, B)
    if p.logp_A is not None:
        kl = tc.absorbing_kl_masked(p.logp_A, q.logp_A, p.masked_A, p.unmask_A, p.allowed_A)
        terms["A"] = scatter_sum(kl, batch, B)
    return terms


def _log_prob_of(p: TransitionParams, tr: Transition, batch: torch.Tensor, B: int) -> torch.Tensor:
    return sum(log_prob_terms(p, tr, batch, B).values())


def _kl_of(p: TransitionParams, q: TransitionParams, batch: torch.Tensor, B: int) -> torch.Tensor:
    return sum(kl_terms(p, q, batch, B).values())


def transition_log_prob(
    model: CrystalDiffusion, tr: Transition, batch: torch.Tensor, num_atoms: torch.Tensor
) -> torch.Tensor:
    """(B,) log p_θ(F_mid, M_{t_prev} | M_t) of the stored action under ``model`` (differentiable)."""
    return _log_prob_of(model.transition_params(tr, batch, num_atoms), tr, batch, tr.L.shape[0])


def transition_kl(
    model: CrystalDiffusion, prior: CrystalDiffusion, tr: Transition, batch: torch.Tensor, num_atoms: torch.Tensor
) -> torch.Tensor:
    """(B,) KL(p_model(·|M_t) ‖ p_prior(·|M_t)) summed over the stochastic sub-steps of ``tr``.

    Both sub-steps are evaluated on the stored states (M_t and M_mid). The F terms are the exact KLs
    of the two wrapped normals on the torus (not the Gaussian KL of the wrapped mean difference,
    which overstates them ≈170× at the first step, where the corrector σ ≈ 0.45); see :func:`kl_terms`.
    """
    return transition_log_prob_and_kl(model, prior, tr, batch, num_atoms)[1]


def transition_log_prob_and_kl(
    model: CrystalDiffusion,
    prior: CrystalDiffusion | None,
    tr: Transition,
    batch: torch.Tensor,
    num_atoms: torch.Tensor,
    components: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Both of the above from one evaluation of ``model`` (KL is None without a prior).

    ``components`` restricts the log-probability to those of ``COMPONENTS`` (default: all); the
    KL always covers every component.
    """
    p = model.transition_params(tr, batch, num_atoms)
    B = tr.L.shape[0]
    terms = log_prob_terms(p, tr, batch, B)
    zero = torch.zeros(B, dtype=tr.L.dtype, device=tr.L.device)
    logp = sum((terms[c] for c in components or COMPONENTS if c in terms), zero)
    if prior is None:
        return logp, None
    with torch.no_grad():
        q = prior.transition_params(tr, batch, num_atoms)
    return logp, _kl_of(p, q, batch, B)
