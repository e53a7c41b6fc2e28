"""The optimisation methods: small siblings that differ only in how they update the agent.

Every method sees the same iteration (a :class:`Rollout`: trajectories, crystals, rewards) from
the shared loop in :mod:`matinvent.rl.loop`; flags say whether the loop applies the diversity
filter and the replay buffer for it.

- ``matinvent``: top-k (filtered reward) + replay; −α·r·Σ log p + β·(λ − r)·Σ KL(agent ‖ prior)
  (with ``baseline: batch`` the first weight is α·(r − b), b = the batch's mean filtered reward;
  ``pg_components`` limits log p to some of F_corr, F, L, A);
- ``reinforce``: the policy-gradient term alone over the batch (no KL, replay or filter);
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

from matinvent.batch import CrystalBatch
from matinvent.crystal import Crystal
from matinvent.crystal_diffusion import CrystalDiffusion, transition_log_prob_and_kl
from matinvent.rl.config import RLConfig
from matinvent.rl.replay import ReplayEntry
from matinvent.rl.trajectories import CrystalTrajectory, stack_step


@dataclass
class Rollout:
    """One iteration's batch. Arrays are aligned with ``crystals``; rewards are 0 where not evaluated."""

    trajectories: list[CrystalTrajectory]
    crystals: list[Crystal | None]
    formulas: list[str]
    evaluated: np.ndarray
    reward: np.ndarray
    filtered: np.ndarray
    keys: list[str]


def top_indices(scores: np.ndarray, mask: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores among ``mask`` (ties: lower index first)."""
    idx = np.flatnonzero(mask)
    order = sorted(idx.tolist(), key=lambda i: (-scores[i], i))
    return order[:k]


def trajectory_crystal(model: CrystalDiffusion, traj: CrystalTrajectory) -> Crystal:
    """The crystal at the end of a stored trajectory."""
    n = torch.tensor([traj.num_atoms])
    L = traj.L[-1] * model._lattice_scale(n, traj.L.dtype)[0]
    Z = traj.A[-1][:, : model.n_types].argmax(-1) + 1  # masked types: the mask column is empty at the end
    return Crystal(Z=Z.numpy(), F=traj.F[-1].numpy(), L=L.numpy())


class Method:
    """Base: holds the agent, the frozen prior, the optimiser and the update RNG."""

    name = ""
    trains = True
    uses_filter = False
    uses_replay = False

    def __init__(
        self,
        cfg: RLConfig,
        agent: CrystalDiffusion,
        prior: CrystalDiffusion,
        ts: list[int],
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
    ) -> None:
        self.cfg, self.agent, self.prior, self.ts = cfg, agent, prior, ts
        self.opt, self.gen = optimizer, generator

    def update(self, rollout: Rollout, replay: list[tuple[ReplayEntry, CrystalTrajectory]]) -> dict[str, float]:
        raise NotImplementedError

    # --- shared pieces -------------------------------------------------------------------
    def top_k_and_replay(self, rollout: Rollout, replay) -> tuple[list[CrystalTrajectory], np.ndarray]:
        """The top ``topk_ratio`` of the batch by filtered reward, plus the replayed crystals."""
        k = math.ceil(self.cfg.topk_ratio * len(rollout.crystals))
        top = top_indices(rollout.filtered, rollout.evaluated, k)
        trajs = [rollout.trajectories[i] for i in top] + [t for _, t in replay]
        rewards = np.array([rollout.filtered[i] for i in top] + [e.reward for e, _ in replay], dtype=np.float64)
        return trajs, rewards

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """One clipped Adam step on ``loss``; returns its value."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.agent.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return float(loss.detach())

    def draw_steps(self) -> list[int]:
        """K of the T reverse steps, without replacement (all T when kl_steps is 0 or ≥ T)."""
        T = len(self.ts)
        K = T if self.cfg.kl_steps in (0, None) else min(self.cfg.kl_steps, T)
        return sorted(torch.randperm(T, generator=self.gen)[:K].tolist())

    def baseline(self, rewards: np.ndarray) -> float:
        """The policy gradient's b: 0 (``baseline: none``) or the mean of ``rewards`` (``batch``)."""
        return float(np.mean(rewards)) if self.cfg.baseline == "batch" and len(rewards) else 0.0

    def policy_step(
        self, trajs: list[CrystalTrajectory], rewards: np.ndarray, use_kl: bool, baseline: float = 0.0
    ) -> dict[str, float]:
        """``epochs`` optimiser steps on −α·(r − b)·Σ log p (+ β·(λ − r)·Σ KL), mean over trajectories."""
        if not trajs:
            return {}
        cfg, dev = self.cfg, self.cfg.device
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float32), device=dev)
        adv = r - baseline
        components = tuple(cfg.pg_components)
        T = len(self.ts)
        stats = {"loss": 0.0, "logp": 0.0, "kl": 0.0}
        for _ in range(cfg.epochs):
            steps = self.draw_steps()
            scale = T / len(steps)
            self.opt.zero_grad(set_to_none=True)
            for s in steps:
                tr, batch, num_atoms = stack_step(trajs, s, self.ts, dev)
                logp, kl = transition_log_prob_and_kl(
                    self.agent, self.prior if use_kl else None, tr, batch, num_atoms, components
                )
                loss = -cfg.alpha * (adv * logp)
                if kl is not None:
                    loss = loss + cfg.beta * (cfg.lam - r) * kl
                    stats["kl"] += scale * float(kl.detach().mean()) / cfg.epochs
                loss = scale * loss.mean()
                loss.backward()
                stats["loss"] += float(loss.detach()) / cfg.epochs
                stats["logp"] += scale * float(logp.detach().mean()) / cfg.epochs
            torch.nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.grad_clip)
            self.opt.step()
        if not use_kl:
            stats["kl"] = math.nan
        return stats


class PriorMethod(Method):
    name = "prior"
    trains = False

    def update(self, rollout, replay):
        return {}


class MatInvent(Method):
    name = "matinvent"
    uses_filter = True
    uses_replay = True

    def update(self, rollout, replay):
        trajs, rewards = self.top_k_and_replay(rollout, replay)
        b = self.baseline(rollout.filtered[rollout.evaluated])
        return self.policy_step(trajs, rewards, use_kl=True, baseline=b)


class Reinforce(Method):
    name = "reinforce"

    def update(self, rollout, replay):
        b = self.baseline(rollout.reward[rollout.evaluated])
        keep = rollout.evaluated if b else rollout.evaluated & (rollout.reward > 0)  # r − b = 0 adds no gradient
        idx = np.flatnonzero(keep).tolist()
        return self.policy_step([rollout.trajectories[i] for i in idx], rollout.reward[idx], use_kl=False, baseline=b)


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
        trajs, rewards = self.top_k_and_replay(rollout, replay)
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
