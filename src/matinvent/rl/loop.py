"""The shared optimisation loop: sample → check validity → score → remember → filter → update.

Every method (:mod:`matinvent.rl.methods`) runs through :func:`optimize`. A run folder holds

- ``run.json``       — task, method, seed, config, run id (checked on ``--resume``);
- ``memory.sqlite``  — every sampled crystal, committed per batch as soon as it is scored;
- ``checkpoint.pt``  — agent + optimiser, RNG states, diversity counts, replay index, metrics,
  written atomically after every iteration (loaded with ``weights_only=True``);
- ``replay/``        — trajectories of the replay buffer's crystals;
- ``metrics.csv``    — one row per iteration; ``summary.json`` at the end; ``agent/`` — the
  fine-tuned model as a prior checkpoint folder (``matinvent sample --checkpoint RUN/agent``).

A run killed at any point resumes exactly: the checkpoint restores iteration k's starting state,
the same crystals are sampled again, and rows already in memory for that iteration are reused
instead of calling the oracles again.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from matinvent.checkpoint import load_prior, resolve_checkpoint, save_prior
from matinvent.config import ConfigError
from matinvent.config import to_dict as config_to_dict
from matinvent.crystal import Crystal
from matinvent.diffusion import respaced_timesteps
from matinvent.memory import CrystalRecord, Memory
from matinvent.metrics import RunningMetrics
from matinvent.rewards import Task, load_task
from matinvent.rl.config import RLConfig, validate
from matinvent.rl.diversity import DiversityFilter
from matinvent.rl.methods import METHOD_CLASSES, Rollout
from matinvent.rl.replay import ReplayBuffer
from matinvent.rl.trajectories import split_trajectory
from matinvent.scoring import Scorer

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
MEMORY = "memory.sqlite"
MAX_EMPTY_ITERATIONS = 10  # consecutive iterations without a valid crystal before a run gives up


def validity_flags(crystals: list[Crystal | None], mode: str) -> np.ndarray:
    """Which crystals go to the oracles under the gate ``mode`` (``matinvent.validity.GATES``; old names mapped).

    ``physical+composition`` (the default; old name ``full``) = covalent-radius contacts + density
    window + SMACT; ``physical`` (old ``structure``); ``cdvae`` / ``cdvae+composition`` = the 0.5 Å
    check of earlier releases; ``none`` = every readable crystal.
    """
    from matinvent.validity import gate_flags

    return gate_flags(crystals, mode)[0]


def _formula(c: Crystal | None) -> str:
    if c is None:
        return ""
    try:
        with warnings.catch_warnings():  # pymatgen warns about noble gases lacking electronegativities
            warnings.simplefilter("ignore")
            return c.formula
    except Exception:  # noqa: BLE001 - a record pymatgen cannot build has no formula
        return ""


def check_method(method: str) -> None:
    if method not in METHOD_CLASSES:
        raise ConfigError(f"unknown method '{method}' (choose from: {', '.join(METHOD_CLASSES)})")


def optimize(
    task: str | Path | Task,
    method: str,
    budget: int,
    seed: int,
    out: str | Path,
    cfg: RLConfig | None = None,
    resume: bool = False,
    scorer: Scorer | None = None,
    progress: bool = True,
    max_iterations: int | None = None,
    callback: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) an optimisation until ``budget`` oracle evaluations; returns the summary.

    ``scorer`` replaces the task's oracles (tests, custom pipelines); ``callback(event, iteration)``
    is called with ``"scored"`` after each batch is committed to memory and ``"checkpoint"`` after
    each checkpoint.
    """
    # ---- validate everything before any sampling --------------------------------------------
    check_method(method)
    task = task if isinstance(task, Task) else load_task(task)
    cfg = validate(copy.deepcopy(cfg) if cfg is not None else RLConfig())
    if budget < 1:
        raise ConfigError(f"budget must be >= 1 oracle evaluation, got {budget}")
    out = Path(out)
    started = (out / RUN_FILE).exists()
    if started and not resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it (or choose another --out)")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' is '{cfg.device}' but CUDA is not available")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prior_path = resolve_checkpoint(cfg.prior)
    prior = load_prior(prior_path, device=cfg.device)
    if scorer is None:
        scorer = Scorer(task)  # each call below overrides its gate: the loop gates with cfg.validity itself
    run_info = {
        "task": task.name,
        "method": method,
        "seed": seed,
        "budget": budget,
        "prior": str(prior_path),
        "windows": task.window_text(),
        "properties": task.properties,
        "config": config_to_dict(cfg),
    }
    out.mkdir(parents=True, exist_ok=True)
    if started:
        old = json.loads((out / RUN_FILE).read_text())
        for key in ("task", "method", "seed"):
            if old[key] != run_info[key]:
                raise ConfigError(f"--resume: {out} was run with {key}={old[key]!r}, not {run_info[key]!r}")
        run_info["run_id"] = old["run_id"]
    else:
        run_info["run_id"] = uuid.uuid4().hex[:12]
    (out / RUN_FILE).write_text(json.dumps(run_info, indent=2))
    run_id = run_info["run_id"]

    # ---- models, optimiser, state ------------------------------------------------------------
    for p in prior.parameters():
        p.requires_grad_(False)
    agent = copy.deepcopy(prior)
    for p in agent.parameters():
        p.requires_grad_(True)
    method_cls = METHOD_CLASSES[method]
    opt = torch.optim.Adam(agent.parameters(), lr=cfg.lr) if method_cls.trains else None
    ts = respaced_timesteps(prior.config.timesteps, cfg.sample_steps or prior.config.sample_steps)
    sample_gen = torch.Generator().manual_seed(seed)
    update_gen = torch.Generator().manual_seed(seed + 1)
    np_rng = np.random.default_rng(seed + 2)
    dfilter = DiversityFilter(cfg.df_tol, cfg.df_buff)
    replay = ReplayBuffer(out / "replay", cfg.replay_size, cfg.replay_min_reward)
    metrics = RunningMetrics(n_hits=cfg.n_hits, diversity_budget=cfg.diversity_budget)
    iteration, elapsed = 0, 0.0
    if (out / CHECKPOINT).exists():
        st = torch.load(out / CHECKPOINT, map_location=cfg.device, weights_only=True)
        agent.load_state_dict(st["agent"])
        if opt is not None:
            opt.load_state_dict(st["optimizer"])
        sample_gen.set_state(st["sample_gen"])
        update_gen.set_state(st["update_gen"])
        np_rng.bit_generator.state = json.loads(st["np_rng"])
        dfilter.load_state_dict(json.loads(st["diversity"]))
        replay.load_state_dict(json.loads(st["replay"]))
        metrics = RunningMetrics.from_state_dict(json.loads(st["metrics"]))
        iteration, elapsed = int(st["iteration"]), float(st["elapsed"])
    agent.eval()
    runner = method_cls(cfg, agent, prior, ts, opt, update_gen)
    memory = Memory(out / MEMORY, task.properties)
    _truncate_metrics(out / METRICS, iteration)

    def save_checkpoint() -> None:
        state = {
            "iteration": iteration,
            "agent": agent.state_dict(),
            "optimizer": opt.state_dict() if opt is not None else {},
            "sample_gen": sample_gen.get_state(),
            "update_gen": update_gen.get_state(),
            "np_rng": json.dumps(np_rng.bit_generator.state),
            "diversity": json.dumps(dfilter.state_dict()),
            "replay": json.dumps(replay.state_dict()),
            "metrics": json.dumps(metrics.state_dict()),
            "elapsed": elapsed,
        }
        tmp = out / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, out / CHECKPOINT)
        replay.collect_garbage()

    bar = tqdm(
        total=budget, initial=min(metrics.evaluations, budget), unit="eval", disable=not progress, dynamic_ncols=True
    )
    bar.set_description(f"{method} on {task.name}")
    empty = 0
    try:
        while metrics.evaluations < budget and (max_iterations is None or iteration < max_iterations):
            t0 = time.time()
            before = metrics.evaluations
            row = _iteration(
                iteration, cfg, task, run_id, method, runner, agent, ts, sample_gen, np_rng, scorer,
                memory, dfilter, replay, metrics, budget, callback,
            )  # fmt: skip
            iteration += 1
            seconds = time.time() - t0
            elapsed += seconds
            row.update({"seconds": round(seconds, 3), "elapsed": round(elapsed, 3)})
            _append_metrics(out / METRICS, row)
            save_checkpoint()
            if callback is not None:
                callback("checkpoint", iteration)
            empty = empty + 1 if metrics.evaluations == before else 0
            if empty >= MAX_EMPTY_ITERATIONS:
                raise RuntimeError(
                    f"{empty} iterations in a row without a valid crystal: the agent has collapsed or the "
                    f"'validity' setting rejects everything (run folder {out}, checkpoint kept)"
                )
            bar.n = min(metrics.evaluations, budget)
            bar.set_postfix(hits=metrics.hits, reward=f"{row['reward_mean']:.3f}")
            bar.refresh()
    finally:
        bar.close()
        memory.close()
    save_prior(agent, out / "agent", {"fine_tuned_from": str(prior_path), "task": task.name, "method": method})
    summary = {**{k: run_info[k] for k in ("task", "method", "seed", "budget", "prior", "windows", "properties")}}
    summary.update(metrics.summary())
    summary.update({"iterations": iteration, "wall_s": round(elapsed, 1), "finished": metrics.evaluations >= budget})
    (out / SUMMARY).write_text(json.dumps(_jsonable(summary), indent=2))
    return summary


def _iteration(
    k, cfg, task, run_id, method, runner, agent, ts, sample_gen, np_rng, scorer, memory, dfilter, replay, metrics,
    budget, callback,
) -> dict[str, Any]:  # fmt: skip
    """One sample → score → remember → update step; returns its metrics row."""
    traj = agent.sample(cfg.batch_size, generator=sample_gen, steps=len(ts), return_trajectory=True)
    trajs = split_trajectory(traj)
    crystals = traj.final.to_crystals(strict=False)
    valid = validity_flags(crystals, cfg.validity)
    formulas = [_formula(c) for c in crystals]
    props = {p: np.full(len(crystals), np.nan) for p in task.properties}
    reward = np.zeros(len(crystals))
    hit = np.zeros(len(crystals), dtype=bool)
    failed = np.zeros(len(crystals), dtype=bool)
    existing = memory.iteration_rows(run_id, k)
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
    else:
        remaining = budget - metrics.evaluations
        evaluated = valid & (np.cumsum(valid) <= remaining)
        n_keep = len(crystals) if valid.sum() <= remaining else int(np.flatnonzero(evaluated)[-1]) + 1
        idx = np.flatnonzero(evaluated)
        if len(idx):
            scores = scorer([crystals[i] for i in idx], validity="none")  # gated above by cfg.validity
            for p in task.properties:
                props[p][idx] = scores.values[p]
            reward[idx], hit[idx], failed[idx] = scores.reward, scores.hit, scores.failed
    keep = np.arange(len(crystals)) < n_keep
    evaluated &= keep
    filtered = reward.copy()
    if runner.uses_filter:
        idx = np.flatnonzero(evaluated)
        filtered[idx] = dfilter([formulas[i] for i in idx], reward[idx])
    keys = [f"{k:06d}_{i:03d}" for i in range(len(crystals))]
    if not existing:
        memory.add(
            CrystalRecord(
                run_id=run_id, method=method, iteration=k, idx=i, formula=formulas[i],
                cif=crystals[i].to_cif() if crystals[i] is not None else "", valid=bool(evaluated[i]),
                failed=bool(failed[i]), properties={p: props[p][i] for p in task.properties},
                reward=float(reward[i]), filtered_reward=float(filtered[i]), hit=bool(hit[i]),
            )
            for i in range(n_keep)
        )  # fmt: skip
    metrics.add_many((bool(evaluated[i]), formulas[i], bool(hit[i])) for i in range(n_keep))
    if callback is not None:
        callback("scored", k)
    rollout = Rollout(trajs, crystals, formulas, evaluated, reward, filtered, keys)
    replayed = replay.sample(cfg.replay_per_iter, np_rng) if runner.uses_replay else []
    stats = runner.update(rollout, replayed) if runner.trains else {}
    if runner.uses_replay:
        for i in np.flatnonzero(evaluated):
            replay.add(keys[i], formulas[i], float(reward[i]), trajs[i])
        replay.purge(dfilter.saturated())
    ev = np.flatnonzero(evaluated)
    row: dict[str, Any] = {
        "iteration": k,
        "samples": metrics.samples,
        "evaluations": metrics.evaluations,
        "valid_rate": float(valid[keep].mean()) if n_keep else math.nan,
        "reward_mean": float(reward[ev].mean()) if len(ev) else math.nan,
        "reward_std": float(reward[ev].std()) if len(ev) else math.nan,
        "filtered_reward_mean": float(filtered[ev].mean()) if len(ev) else math.nan,
    }
    for p in task.properties:
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
            "replay_size": len(replay),
        }
    )
    return row


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metrics rows of iterations not covered by the checkpoint (written just before a kill)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    kept = [r for r in rows if int(r["iteration"]) < iteration]
    if len(kept) != len(rows):
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(kept)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
