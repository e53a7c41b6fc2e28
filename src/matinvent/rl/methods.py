"""The optimisation methods: small siblings that differ only in how they update the agent.

Every method sees the same iteration (a :class:`Rollout`: trajectories, crystals, rewards) from
the shared loop in :mod:`matinvent.rl.loop`; flags say whether the loop applies the diversity
filter and the replay buffer for it.

- ``matinvent``: top-k (filtered reward) + replay; −α·r·Σ log p + β·(λ − r)·Σ KL(agent ‖ prior),
  with the stabilisers of :mod:`matinvent.rl.objective` as config switches (``baseline``,
  ``logp_reduce``, ``sigma_floor``, ``skip_last``, ``ppo_clip``, ``replay_pg``, ``kl_weights``;
  ``pg_components`` limits log p to some of F_corr, F, L, A; ``natoms_action`` adds N);
- ``reinforce``: the policy-gradient term alone over the batch (no KL, replay or filter), the
  stabilisers off (``reinforce_baseline`` may subtract a baseline);
- ``hill-climb``: ordinary denoising loss on the top 40 % of the batch, 4 epochs;
- ``prior``: frozen, sample only;
- ``weighted-denoising``: reward-weighted denoising loss on top-k + replay plus an MSE pull
  toward the prior's predictions (the official MatInvent code's formulation), ``wd_epochs`` steps.

Σ over the T reverse steps is estimated from K steps drawn without replacement, scaled by T/K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from matinvent.crystal.batch import CrystalBatch
from matinvent.crystal.record import Crystal
from matinvent.prior.diffusion_config import COMPONENTS
from matinvent.prior.model import CrystalDiffusion
from matinvent.prior.transitions import TransitionParams
from matinvent.rl.config import RLConfig
from matinvent.rl.natoms import NatomsPolicy
from matinvent.rl.objective import (
    advantages,
    component_dims,
    component_kls,
    component_log_probs,
    policy_loss,
    step_loss,
    type_dims,
)
from matinvent.rl.replay import ReplayEntry
from matinvent.rl.trajectories import CrystalTrajectory, stack_step


@dataclass
class Rollout:
    """One iteration's batch. Arrays are aligned with ``crystals``; rewards are 0 where not evaluated.

    ``rejected`` marks the crystals of the batch the validity gate turned away (no oracle call; None = none).
    """

    trajectories: list[CrystalTrajectory]
    crystals: list[Crystal | None]
    formulas: list[str]
    evaluated: np.ndarray
    reward: np.ndarray
    filtered: np.ndarray
    keys: list[str]
    rejected: np.ndarray | None = None

    def scored(self, with_rejected: bool) -> np.ndarray:
        """The crystals with a known reward: the evaluated ones, plus the rejected ones (reward 0) if asked."""
        if not with_rejected or self.rejected is None:
            return self.evaluated
        return self.evaluated | self.rejected


def top_indices(scores: np.ndarray, mask: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores among ``mask`` (ties: lower index first)."""
    idx = np.flatnonzero(mask)
    order = sorted(idx.tolist(), key=lambda i: (-scores[i], i))
    return order[:k]


def trajectory_crystal(model: CrystalDiffusion, traj: CrystalTrajectory) -> Crystal:
    """The crystal at the end of a stored trajectory."""
    n = torch.tensor([traj.num_atoms])
    L = traj.L[-1] * model.lattice_scale(n, traj.L.dtype)[0]
    Z = model.decode_types(traj.A[-1], torch.zeros(traj.num_atoms, dtype=torch.long), n)  # as the sampler decodes
    return Crystal(Z=Z.numpy(), F=traj.F[-1].numpy(), L=L.numpy())


class Method:
    """Base: holds the agent, the frozen prior, the optimiser and the update RNG."""

    name = ""
    trains = True
    uses_filter = False
    uses_replay = False
    policy_gradient = False  # trains on log-probs of sampled actions (PPO ratios need them stored)
    stabilised = False  # uses the Eq. 17 stabilisers of the config (else they are switched off for it)

    def __init__(
        self,
        cfg: RLConfig,
        agent: CrystalDiffusion,
        prior: CrystalDiffusion,
        ts: list[int],
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        natoms: NatomsPolicy | None = None,
    ) -> None:
        self.cfg, self.agent, self.prior, self.ts = cfg, agent, prior, ts
        self.opt, self.gen, self.natoms = optimizer, generator, natoms

    def update(self, rollout: Rollout, replay: list[tuple[ReplayEntry, CrystalTrajectory]]) -> dict[str, float]:
        raise NotImplementedError

    # --- shared pieces -------------------------------------------------------------------
    def top_k_and_replay(
        self, rollout: Rollout, replay, mask: np.ndarray | None = None
    ) -> tuple[list[CrystalTrajectory], np.ndarray, np.ndarray]:
        """The top ``topk_ratio`` of ``mask`` (default: the evaluated crystals) by filtered reward, plus the
        replayed crystals (flagged), each with its filtered reward (Eq. 18)."""
        k = math.ceil(self.cfg.topk_ratio * len(rollout.crystals))
        top = top_indices(rollout.filtered, rollout.evaluated if mask is None else mask, k)
        trajs = [rollout.trajectories[i] for i in top] + [t for _, t in replay]
        rewards = np.array([rollout.filtered[i] for i in top] + [e.filtered_reward for e, _ in replay], np.float64)
        replayed = np.arange(len(trajs)) >= len(top)
        return trajs, rewards, replayed

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """One clipped Adam step on ``loss``; returns its value."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.agent.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return float(loss.detach())

    def draw_steps(self) -> list[int]:
        """K of the trainable reverse steps (all but the last ``skip_last``), drawn without replacement."""
        T = len(self.ts) - self.cfg.skip_last
        K = T if self.cfg.kl_steps in (0, None) else min(self.cfg.kl_steps, T)
        return sorted(torch.randperm(T, generator=self.gen)[:K].tolist())

    def advantages(self, rewards: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """The PG weights of ``rewards`` under ``baseline`` (mean/std from ``reference``)."""
        return advantages(rewards, reference, self.cfg.baseline, self.cfg.adv_clip)

    def policy_step(
        self,
        trajs: list[CrystalTrajectory],
        rewards: np.ndarray,
        adv: np.ndarray,
        use_kl: bool,
        replayed: np.ndarray | None = None,
        epochs: int | None = None,
    ) -> dict[str, float]:
        """``epochs`` (default ``cfg.epochs``) optimiser steps on the (stabilised) Eq. 17, mean over trajectories.

        Per drawn step: α·PG(log p, A) + β·(λ − r)·Σ_c w_c KL_c (:mod:`matinvent.rl.objective`),
        scaled by T/K; ``recompute_chunk`` drawn steps share one network call per model, and the frozen
        prior's parameters of a step are computed once per call (the epochs redraw steps, not states);
        plus, with the atom-count action, the same two terms for N once per epoch.
        ``replayed`` marks trajectories from the replay buffer (left out of the PG with ``replay_pg: exclude``).
        """
        if not trajs:
            return {}
        cfg, dev = self.cfg, self.cfg.device
        B = len(trajs)
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float32), device=dev)
        a = torch.as_tensor(np.asarray(adv, dtype=np.float32), device=dev)
        replayed = np.zeros(B, dtype=bool) if replayed is None else np.asarray(replayed, dtype=bool)
        pg_on = torch.as_tensor(~replayed if cfg.replay_pg == "exclude" else np.ones(B, dtype=bool), device=dev)
        pg_mask = torch.tensor([c in cfg.pg_components for c in COMPONENTS], dtype=torch.float32, device=dev)
        kl_w = torch.tensor(cfg.kl_weights.as_list(), dtype=torch.float32, device=dev)
        has_old = torch.tensor([t.logp is not None for t in trajs], device=dev)
        clip = cfg.ppo_clip
        T = len(self.ts) - cfg.skip_last
        stats = {"loss": 0.0, "logp": 0.0, "kl": 0.0, "clip_frac": 0.0}
        n_terms = 0
        n_epochs = cfg.epochs if epochs is None else epochs
        prior_params: dict[int, TransitionParams] = {}  # step → the prior's parameters for these trajectories
        for _ in range(n_epochs):
            steps = self.draw_steps()
            scale = T / len(steps)
            self.opt.zero_grad(set_to_none=True)
            size = cfg.recompute_chunk or len(steps)
            for chunk in (steps[i : i + size] for i in range(0, len(steps), size)):
                # the chunk's steps in one network call per model (stacked along the batch), one backward
                stacked = [stack_step(trajs, s, self.ts, dev) for s in chunk]
                trs, batch, num_atoms = [x[0] for x in stacked], stacked[0][1], stacked[0][2]
                ps = self.agent.transition_params_many(trs, batch, num_atoms)
                qs = [None] * len(trs)
                if use_kl:  # the frozen prior's parameters of a step are the same in every epoch: computed once
                    todo = [(s, tr) for s, tr in zip(chunk, trs, strict=True) if s not in prior_params]
                    with torch.no_grad():
                        fresh = self.prior.transition_params_many([tr for _, tr in todo], batch, num_atoms)
                    prior_params.update({s: q for (s, _), q in zip(todo, fresh, strict=True)})
                    qs = [prior_params[s] for s in chunk]
                chunk_loss = None
                for s, tr, p, q in zip(chunk, trs, ps, qs, strict=True):
                    comp = component_log_probs(p, tr, batch, num_atoms, cfg.sigma_floor, "sum")  # true log-probs
                    dims = component_dims(num_atoms, comp.dtype, type_dims(p))
                    lp_sum = (comp * pg_mask).sum(-1)
                    lp = (comp / dims * pg_mask).sum(-1) if cfg.logp_reduce == "mean" else lp_sum
                    # the PPO ratio is exp(Δ of the summed log-probs): stored per cfg.logp_reduce, so mean × dims
                    summed = cfg.ppo_ratio == "summed"
                    old = None
                    if clip > 0:
                        weights = pg_mask * (dims if summed and cfg.logp_reduce == "mean" else 1)
                        old = self._old_logp(trajs, s, weights, dev)
                    kl = None
                    if use_kl:
                        kl = component_kls(p, q, batch, num_atoms, cfg.sigma_floor, cfg.logp_reduce)
                        stats["kl"] += scale * float((kl.detach() * kl_w).sum(-1).mean()) / n_epochs
                    per, ratio = step_loss(
                        lp,
                        a,
                        old,
                        clip,
                        has_old,
                        pg_on,
                        cfg.alpha,
                        kl,
                        r,
                        cfg.beta,
                        cfg.lam,
                        kl_w,
                        ratio_logp=lp_sum if summed else None,
                    )
                    loss = scale * per.mean()
                    chunk_loss = loss if chunk_loss is None else chunk_loss + loss
                    stats["loss"] += float(loss.detach()) / n_epochs
                    stats["logp"] += scale * float(lp.detach().mean()) / n_epochs
                    if clip > 0:  # over the rows that use the ratio (stored log-probs, in the PG)
                        used = has_old & pg_on
                        clipped = ((ratio - 1).abs() > clip) & used
                        stats["clip_frac"] += float(clipped.sum()) / max(int(used.sum()), 1)
                    n_terms += 1
                chunk_loss.backward()
            if self.natoms is not None:
                stats["loss"] += self._natoms_step(trajs, r, a, pg_on, use_kl) / n_epochs
            params = list(self.agent.parameters())
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if self.natoms is not None:
                torch.nn.utils.clip_grad_norm_(self.natoms.parameters(), cfg.grad_clip)
            self.opt.step()
        stats["clip_frac"] = stats["clip_frac"] / n_terms if clip > 0 and n_terms else math.nan
        if not use_kl:
            stats["kl"] = math.nan
        return stats

    @staticmethod
    def _old_logp(trajs: list[CrystalTrajectory], s: int, weights: torch.Tensor, dev: str) -> torch.Tensor:
        """(B,) stored sampling-time log-probs of step ``s``, Σ_c weights[..., c]·logp_c (0 where not stored);
        ``weights``: the PG mask (C,), or it times the (B, C) dimension counts to undo a per-dimension mean."""
        rows = [t.logp[s] if t.logp is not None else torch.zeros(weights.shape[-1]) for t in trajs]
        return (torch.stack(rows).to(dev) * weights).sum(-1)

    def _natoms_step(self, trajs, r: torch.Tensor, a: torch.Tensor, pg_on: torch.Tensor, use_kl: bool) -> float:
        """Backpropagate α·PG + β·(λ − r)·KL of the atom-count action (once per epoch); returns its value."""
        cfg = self.cfg
        n = torch.tensor([t.num_atoms for t in trajs], device=cfg.device)
        lp = self.natoms.log_prob(n)
        has_old = all(t.logp_N is not None for t in trajs)
        old = torch.cat([t.logp_N for t in trajs]).to(cfg.device) if has_old and cfg.ppo_clip > 0 else None
        pg, _ = policy_loss(lp, a, old, cfg.ppo_clip)
        loss = cfg.alpha * pg * pg_on
        if use_kl:
            loss = loss + cfg.beta * (cfg.lam - r) * self.natoms.kl()
        loss = loss.mean()
        loss.backward()
        return float(loss.detach())


class PriorMethod(Method):
    name = "prior"
    trains = False

    def update(self, rollout, replay):
        return {}


class MatInvent(Method):
    name = "matinvent"
    uses_filter = True
    uses_replay = True
    policy_gradient = True
    stabilised = True

    def update(self, rollout, replay):
        scored = rollout.scored(self.cfg.rejected_pg == "zero")
        trajs, rewards, replayed = self.top_k_and_replay(rollout, replay, scored)
        adv = self.advantages(rewards, rollout.filtered[scored])
        return self.policy_step(trajs, rewards, adv, use_kl=True, replayed=replayed)


class Reinforce(Method):
    name = "reinforce"
    policy_gradient = True

    def update(self, rollout, replay):
        reference = rollout.reward[rollout.evaluated]
        adv = advantages(rollout.reward, reference, self.cfg.reinforce_baseline, self.cfg.adv_clip)
        keep = rollout.evaluated & (adv != 0)  # a zero advantage adds no gradient
        idx = np.flatnonzero(keep).tolist()
        trajs = [rollout.trajectories[i] for i in idx]
        return self.policy_step(trajs, rollout.reward[idx], adv[idx], use_kl=False, epochs=self.cfg.reinforce_epochs)


class HillClimb(Method):
    name = "hill-climb"

    def update(self, rollout, replay):
        k = math.ceil(self.cfg.hc_top_ratio * len(rollout.crystals))
        top = [i for i in top_indices(rollout.reward, rollout.evaluated, k) if rollout.crystals[i] is not None]
        if not top:
            return {}
        batch = CrystalBatch.from_crystals([rollout.crystals[i] for i in top]).to(self.cfg.device)
        total = 0.0
        for _ in range(self.cfg.hc_epochs):
            total += self.optimizer_step(self.agent.loss(batch, generator=self.gen)["loss"]) / self.cfg.hc_epochs
        return {"loss": total}


class WeightedDenoising(Method):
    name = "weighted-denoising"
    uses_filter = True
    uses_replay = True

    def update(self, rollout, replay):
        trajs, rewards, _ = self.top_k_and_replay(rollout, replay)
        keep = [i for i, r in enumerate(rewards) if r > 0]
        if not keep:
            return {}
        crystals = [trajectory_crystal(self.agent, trajs[i]) for i in keep]
        w = torch.as_tensor(rewards[keep] / rewards[keep].sum(), dtype=torch.float32, device=self.cfg.device)
        batch = CrystalBatch.from_crystals(crystals).to(self.cfg.device)
        c = self.agent.config
        stats = {"loss": 0.0, "kl": 0.0}
        for _ in range(self.cfg.wd_epochs):
            nb = self.agent.noise(batch, self.gen)
            pred = self.agent.predict_noised(nb)
            with torch.no_grad():
                ref = self.prior.predict_noised(nb)
            denoise = (w * self.agent.loss_of(nb, pred, per_crystal=True)["loss"]).sum()
            pull = (
                c.cost_lattice * (pred[0] - ref[0]).pow(2).mean()
                + c.cost_coord * (pred[1] - ref[1]).pow(2).mean()
                + c.cost_type * (pred[2] - ref[2]).pow(2).mean()
            )
            stats["loss"] += self.optimizer_step(denoise + self.cfg.wd_prior_weight * pull) / self.cfg.wd_epochs
            stats["kl"] += float(pull.detach()) / self.cfg.wd_epochs  # the prior-pull term stands in for KL
        return stats


METHOD_CLASSES: dict[str, type[Method]] = {
    m.name: m for m in (MatInvent, Reinforce, HillClimb, PriorMethod, WeightedDenoising)
}
