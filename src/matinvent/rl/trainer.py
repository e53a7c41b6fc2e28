"""The RL trainer: one run's state and its sample → check → score → remember → filter → update step.

``RLTrainer(cfg, task, scorer, prior, method, seed, run_dir, run_id)`` owns the agent (a copy of
the prior; both sample and score transitions under the run's chemical-space constraints
``cfg.constraints``), the optimiser, the optional atom-count policy, the RNGs, the diversity
filter, the replay buffer, the running metrics and the run's crystal memory. ``step(budget)`` runs one
iteration and returns its metrics row; ``state_dict()`` / ``load_state_dict()`` hold everything
needed to continue exactly (tensors and JSON strings only, so ``torch.load(weights_only=True)``
reads it). The methods of :mod:`matinvent.rl.methods` differ only in ``update``.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matinvent.crystal.constraints import ChemConstraints
from matinvent.crystal.record import Crystal
from matinvent.crystal.validity import gate_flags
from matinvent.diffusion import respaced_timesteps
from matinvent.evaluation.distributions import element_set
from matinvent.io.run_memory import CrystalRecord, Memory
from matinvent.prior.model import CrystalDiffusion
from matinvent.prior.transitions import Trajectory
from matinvent.rl.config import RLConfig, paper_loss
from matinvent.rl.diversity import DiversityFilter
from matinvent.rl.element_balance import ElementBalance
from matinvent.rl.methods import METHOD_CLASSES, Rollout
from matinvent.rl.metrics import RunningMetrics
from matinvent.rl.natoms import NatomsPolicy
from matinvent.rl.objective import component_log_probs
from matinvent.rl.replay import ReplayBuffer
from matinvent.rl.trajectories import CrystalTrajectory, split_trajectory
from matinvent.rl.uniqueness import UniqueKeys
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import Task

MEMORY = "memory.sqlite"


def formula_of(c: Crystal | None) -> str:
    if c is None:
        return ""
    try:
        with warnings.catch_warnings():  # pymatgen warns about noble gases lacking electronegativities
            warnings.simplefilter("ignore")
            return c.formula
    except Exception:  # noqa: BLE001 - a record pymatgen cannot build has no formula
        return ""


def sampling_log_probs(traj: Trajectory, cfg: RLConfig) -> torch.Tensor:
    """(S, B, C) per-component log-probs of every sampled action under the sampling policy."""
    rows = [
        component_log_probs(tr.params, tr, traj.batch, traj.num_atoms, cfg.sigma_floor, cfg.logp_reduce)
        for tr in traj.transitions
    ]
    return torch.stack(rows).cpu()


class RLTrainer:
    """One optimisation run (see the module docstring)."""

    def __init__(
        self,
        cfg: RLConfig,
        task: Task,
        scorer: Scorer,
        prior: CrystalDiffusion,
        method: str,
        seed: int,
        run_dir: str | Path,
        run_id: str,
    ) -> None:
        method_cls = METHOD_CLASSES[method]
        cfg = cfg if method_cls.stabilised else paper_loss(cfg)  # the baselines train with the paper's terms
        self.cfg, self.task, self.scorer, self.method, self.run_id = cfg, task, scorer, method, run_id
        self.constraints = ChemConstraints.from_dict(cfg.constraints)
        prior.set_constraints(self.constraints, source=f"prior '{cfg.prior}'")  # the agent (a copy) inherits them
        self.prior = prior
        for p in prior.parameters():
            p.requires_grad_(False)
        self.agent = copy.deepcopy(prior)
        for p in self.agent.parameters():
            p.requires_grad_(True)
        self.agent.eval()
        allowed_n = prior.constraint.natoms if prior.constraint is not None else None
        self.natoms = NatomsPolicy(prior.natoms_prob, allowed_n).to(cfg.device) if cfg.natoms_action else None
        self.opt = None
        if method_cls.trains:
            groups = [{"params": list(self.agent.parameters()), "lr": cfg.lr}]
            if self.natoms is not None:
                groups.append({"params": list(self.natoms.parameters()), "lr": cfg.natoms_lr})
            self.opt = torch.optim.Adam(groups)
        self.ts = respaced_timesteps(prior.config.timesteps, cfg.sample_steps or prior.config.sample_steps)
        if cfg.skip_last >= len(self.ts):
            raise ValueError(f"config key 'skip_last' ({cfg.skip_last}) must be < the {len(self.ts)} sampler steps")
        self.sample_gen = torch.Generator().manual_seed(seed)
        self.update_gen = torch.Generator().manual_seed(seed + 1)
        self.np_rng = np.random.default_rng(seed + 2)
        self.dfilter = DiversityFilter(cfg.df_tol, cfg.df_buff)
        self.balance = None  # elements the run over-uses (rl/element_balance.py); off by default
        if cfg.element_balance:
            ref = "start" if cfg.element_balance_reference == "start" else None
            self.balance = ElementBalance(cfg.element_balance, cfg.element_balance_window, reference=ref)
        self.unique = UniqueKeys(cfg.unique_by)  # what "the same crystal" is for the filter, hits and diversity
        self.replay = ReplayBuffer(Path(run_dir) / "replay", cfg.replay_size, cfg.replay_min_reward)
        self.metrics = RunningMetrics(n_hits=cfg.n_hits, diversity_budget=cfg.diversity_budget)
        self.iteration, self.elapsed = 0, 0.0
        self.phases: dict[str, float] = {}  # seconds of the last step's sample, score, remember and update phases
        self.runner = method_cls(cfg, self.agent, prior, self.ts, self.opt, self.update_gen, self.natoms)
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.memory = Memory(Path(run_dir) / MEMORY, task.properties)

    # --- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "agent": self.agent.state_dict(),
            "natoms": self.natoms.state_dict() if self.natoms is not None else {},
            "optimizer": self.opt.state_dict() if self.opt is not None else {},
            "sample_gen": self.sample_gen.get_state(),
            "update_gen": self.update_gen.get_state(),
            "np_rng": json.dumps(self.np_rng.bit_generator.state),
            "diversity": json.dumps(self.dfilter.state_dict()),
            "unique": json.dumps(self.unique.state_dict()),
            "element_balance": json.dumps(self.balance.state_dict() if self.balance is not None else {}),
            "replay": json.dumps(self.replay.state_dict()),
            "metrics": json.dumps(self.metrics.state_dict()),
            "elapsed": self.elapsed,
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.agent.load_state_dict(st["agent"])
        if self.natoms is not None:
            self.natoms.load_state_dict(st["natoms"])
        if self.opt is not None:
            self.opt.load_state_dict(st["optimizer"])
        self.sample_gen.set_state(st["sample_gen"])
        self.update_gen.set_state(st["update_gen"])
        self.np_rng.bit_generator.state = json.loads(st["np_rng"])
        self.dfilter.load_state_dict(json.loads(st["diversity"]))
        if "unique" in st:  # checkpoints from before unique_by: formula keys, no state
            self.unique.load_state_dict(json.loads(st["unique"]))
        if self.balance is not None and "element_balance" in st:  # older checkpoints: none
            self.balance.load_state_dict(json.loads(st["element_balance"]))
        self.replay.load_state_dict(json.loads(st["replay"]))
        self.metrics = RunningMetrics.from_state_dict(json.loads(st["metrics"]))
        self.iteration, self.elapsed = int(st["iteration"]), float(st["elapsed"])

    def fine_tuned(self) -> CrystalDiffusion:
        """The agent as a prior: its atom-count histogram is the learnt one when N is an action."""
        if self.natoms is not None:
            with torch.no_grad():
                self.agent.natoms_prob.copy_(self.natoms.probs().to(self.agent.natoms_prob))
        return self.agent

    def close(self) -> None:
        self.memory.close()

    # --- one iteration -----------------------------------------------------------------------
    def sample(self) -> tuple[list[CrystalTrajectory], list[Crystal | None]]:
        """Draw a batch (N from the atom-count policy when it is an action) with its trajectories."""
        cfg = self.cfg
        num_atoms = self.natoms.sample(cfg.batch_size, self.sample_gen) if self.natoms is not None else None
        traj = self.agent.sample(
            cfg.batch_size, generator=self.sample_gen, steps=len(self.ts), num_atoms=num_atoms, return_trajectory=True
        )
        trajs = split_trajectory(traj)
        if self.runner.policy_gradient and cfg.ppo_clip > 0:
            logp = sampling_log_probs(traj, cfg)
            with torch.no_grad():
                logp_N = self.natoms.log_prob(traj.num_atoms).cpu() if self.natoms is not None else None
            for i, t in enumerate(trajs):
                t.logp = logp[:, i].clone()
                t.logp_N = logp_N[i : i + 1].clone() if logp_N is not None else None
        return trajs, traj.final.to_crystals(strict=False)

    def step(self, budget: int, callback: Callable[[str, int], None] | None = None) -> dict[str, Any]:
        """One sample → score → remember → update iteration; returns its metrics row."""
        cfg, task, k, memory, metrics = self.cfg, self.task, self.iteration, self.memory, self.metrics
        marks = [time.perf_counter()]  # phase boundaries: start, sampled, scored, remembered, updated
        trajs, crystals = self.sample()
        marks.append(time.perf_counter())
        valid = gate_flags(crystals, cfg.validity)[0]
        formulas = [formula_of(c) for c in crystals]
        props = {p: np.full(len(crystals), np.nan) for p in task.properties}
        reward = np.zeros(len(crystals))
        hit = np.zeros(len(crystals), dtype=bool)
        failed = np.zeros(len(crystals), dtype=bool)
        relaxed: dict[str, list[Any]] = {key: [None] * len(crystals) for key in ("cif", "e_hull", "drop", "rmsd")}
        scored_structures: list[Any] = [None] * len(crystals)  # the relaxed ones, when the loop relaxed
        existing = memory.iteration_rows(self.run_id, k)
        if existing:  # resumed after a kill between scoring and checkpoint: reuse, never re-evaluate
            n_keep = len(existing)
            evaluated = np.zeros(len(crystals), dtype=bool)
            for i, r in existing.items():
                if r["formula"] != formulas[i]:
                    raise RuntimeError(
                        f"resumed run diverged at iteration {k}, crystal {i}: {r['formula']} != {formulas[i]}"
                    )
                evaluated[i] = bool(r["valid"])
                for p in task.properties:
                    props[p][i] = np.nan if r[p] is None else r[p]
                reward[i], hit[i], failed[i] = r["reward"], bool(r["hit"]), bool(r["failed"])
                scored_structures[i] = r.get("relaxed_cif") or None
        else:
            remaining = budget - metrics.evaluations
            evaluated = valid & (np.cumsum(valid) <= remaining)
            n_keep = len(crystals) if valid.sum() <= remaining else int(np.flatnonzero(evaluated)[-1]) + 1
            idx = np.flatnonzero(evaluated)
            if len(idx):
                scores = self.scorer([crystals[i] for i in idx], validity="none")  # gated above by cfg.validity
                for p in task.properties:
                    props[p][idx] = scores.values[p]
                reward[idx], hit[idx], failed[idx] = scores.reward, scores.hit, scores.failed
                if scores.relaxed is not None:  # relax -> gate -> score: the memory keeps both structures
                    for j, i in enumerate(idx):
                        r = scores.relaxed[j]
                        relaxed["cif"][i] = r.to(fmt="cif") if r is not None else None
                        scored_structures[i] = r
                        relaxed["e_hull"][i] = scores.e_hull[j]
                        relaxed["drop"][i] = scores.energy_drop[j]
                        relaxed["rmsd"][i] = scores.rmsd[j]
        keep = np.arange(len(crystals)) < n_keep
        evaluated &= keep
        marks.append(time.perf_counter())
        ukeys = self._unique_keys(formulas, crystals, scored_structures, evaluated)
        filtered = reward.copy()
        if self.runner.uses_filter:
            idx = np.flatnonzero(evaluated)
            filtered[idx] = self.dfilter([ukeys[i] for i in idx], reward[idx])
            if self.balance is not None:  # elements the run over-uses against MP-20 (rl/element_balance.py)
                filtered[idx] = self.balance([sorted(element_set(crystals[i])) for i in idx], filtered[idx])
        keys = [f"{k:06d}_{i:03d}" for i in range(len(crystals))]
        if not existing:
            memory.add(
                CrystalRecord(
                    run_id=self.run_id, method=self.method, iteration=k, idx=i, formula=formulas[i],
                    cif=crystals[i].to_cif() if crystals[i] is not None else "", valid=bool(evaluated[i]),
                    failed=bool(failed[i]), properties={p: props[p][i] for p in task.properties},
                    reward=float(reward[i]), filtered_reward=float(filtered[i]), hit=bool(hit[i]),
                    relaxed_cif=relaxed["cif"][i], e_hull=relaxed["e_hull"][i], energy_drop=relaxed["drop"][i],
                    rmsd=relaxed["rmsd"][i],
                )
                for i in range(n_keep)
            )  # fmt: skip
        metrics.add_many((bool(evaluated[i]), ukeys[i], bool(hit[i])) for i in range(n_keep))
        if callback is not None:
            callback("scored", k)
        rollout = Rollout(trajs, crystals, formulas, evaluated, reward, filtered, keys, rejected=keep & ~valid)
        replayed = self.replay.sample(cfg.replay_per_iter, self.np_rng) if self.runner.uses_replay else []
        marks.append(time.perf_counter())
        stats = self.runner.update(rollout, replayed) if self.runner.trains else {}
        marks.append(time.perf_counter())
        spans = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        self.phases = dict(zip(("sample", "score", "remember", "update"), spans, strict=True))
        if self.runner.uses_replay:
            for i in np.flatnonzero(evaluated):
                self.replay.add(keys[i], ukeys[i], float(reward[i]), trajs[i], float(filtered[i]))
            self.replay.purge(self.dfilter.saturated())
        self.iteration += 1
        return self._row(k, valid, keep, n_keep, evaluated, reward, filtered, props, trajs, stats)

    def _unique_keys(
        self, formulas: list[str], crystals: list[Any], scored: list[Any], evaluated: np.ndarray
    ) -> list[str]:
        """Each crystal's key under ``unique_by`` (formula, or formula#class of the scored structure: the relaxed
        one when the loop relaxed), given in evaluation order; crystals not evaluated keep their formula."""
        if self.unique.mode == "formula":
            return list(formulas)
        from pymatgen.core import Structure

        out = list(formulas)
        for i in np.flatnonzero(evaluated):
            s = scored[i]
            if isinstance(s, str):
                s = Structure.from_str(s, fmt="cif")
            if s is None and crystals[i] is not None:
                s = crystals[i].to_structure()
            out[i] = self.unique.key(formulas[i], s)
        return out

    def _row(self, k, valid, keep, n_keep, evaluated, reward, filtered, props, trajs, stats) -> dict[str, Any]:
        metrics, ev = self.metrics, np.flatnonzero(evaluated)
        row: dict[str, Any] = {
            "iteration": k,
            "samples": metrics.samples,
            "evaluations": metrics.evaluations,
            "valid_rate": float(valid[keep].mean()) if n_keep else math.nan,
            "reward_mean": float(reward[ev].mean()) if len(ev) else math.nan,
            "reward_std": float(reward[ev].std()) if len(ev) else math.nan,
            "filtered_reward_mean": float(filtered[ev].mean()) if len(ev) else math.nan,
        }
        for p in self.task.properties:
            vals = props[p][ev]
            vals = vals[np.isfinite(vals)]
            row[f"{p}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{p}_std"] = float(vals.std()) if len(vals) else math.nan
        row.update(
            {
                "hits": metrics.hits,
                "evals_per_hit": metrics.evals_per_hit if metrics.hits else math.nan,
                "burden": metrics.burden if metrics.burden is not None else math.nan,
                "diversity_ratio": metrics.diversity_ratio,
                "loss": stats.get("loss", math.nan),
                "kl": stats.get("kl", math.nan),
                "logp": stats.get("logp", math.nan),
                "clip_frac": stats.get("clip_frac", math.nan),
                "natoms_mean": float(np.mean([t.num_atoms for t in trajs])),
                "replay_size": len(self.replay),
            }
        )
        return row
