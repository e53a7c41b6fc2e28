"""Running an optimisation in a folder: validation, run.json, checkpoints, metrics, summary.

:func:`optimize` drives an :class:`~matinvent.rl.trainer.RLTrainer` (one iteration per ``step``). A run folder holds

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
from matinvent.rewards import Task, load_task
from matinvent.rl.config import RLConfig, validate
from matinvent.rl.methods import METHOD_CLASSES
from matinvent.rl.trainer import RLTrainer
from matinvent.scoring import Scorer
from matinvent.validity import gate_flags

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
MAX_EMPTY_ITERATIONS = 10  # consecutive iterations without a valid crystal before a run gives up


def validity_flags(crystals: list[Crystal | None], mode: str) -> np.ndarray:
    """Which crystals go to the oracles under the gate ``mode`` (``matinvent.validity.GATES``; old names mapped)."""
    return gate_flags(crystals, mode)[0]


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
    n_steps = len(respaced_timesteps(prior.config.timesteps, cfg.sample_steps or prior.config.sample_steps))
    if cfg.skip_last >= n_steps:
        raise ConfigError(f"config key 'skip_last' ({cfg.skip_last}) must be < the {n_steps} sampler steps")
    own_scorer = scorer is None  # hits are re-checked with the task's oracles only when they scored the run
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

    # ---- the trainer and its state -------------------------------------------------------------
    trainer = RLTrainer(cfg, task, scorer, prior, method, seed, out, run_id)
    if (out / CHECKPOINT).exists():
        trainer.load_state_dict(torch.load(out / CHECKPOINT, map_location=cfg.device, weights_only=True))
    _truncate_metrics(out / METRICS, trainer.iteration)

    def save_checkpoint() -> None:
        tmp = out / (CHECKPOINT + ".tmp")
        torch.save(trainer.state_dict(), tmp)
        os.replace(tmp, out / CHECKPOINT)
        trainer.replay.collect_garbage()

    metrics = trainer.metrics
    bar = tqdm(
        total=budget, initial=min(metrics.evaluations, budget), unit="eval", disable=not progress, dynamic_ncols=True
    )
    bar.set_description(f"{method} on {task.name}")
    empty = 0
    try:
        while trainer.metrics.evaluations < budget and (max_iterations is None or trainer.iteration < max_iterations):
            metrics = trainer.metrics
            t0 = time.time()
            before = metrics.evaluations
            row = trainer.step(budget, callback)
            seconds = time.time() - t0
            trainer.elapsed += seconds
            row.update({"seconds": round(seconds, 3), "elapsed": round(trainer.elapsed, 3)})
            _append_metrics(out / METRICS, row)
            save_checkpoint()
            if callback is not None:
                callback("checkpoint", trainer.iteration)
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
        trainer.close()
    metrics = trainer.metrics
    save_prior(
        trainer.fine_tuned(), out / "agent", {"fine_tuned_from": str(prior_path), "task": task.name, "method": method}
    )
    summary = {**{k: run_info[k] for k in ("task", "method", "seed", "budget", "prior", "windows", "properties")}}
    summary.update(metrics.summary())
    summary.update(
        {
            "iterations": trainer.iteration,
            "wall_s": round(trainer.elapsed, 1),
            "finished": metrics.evaluations >= budget,
        }
    )
    (out / SUMMARY).write_text(json.dumps(_jsonable(summary), indent=2))
    if summary["finished"] and cfg.recheck_n > 0 and metrics.hits > 0 and own_scorer:
        summary["recheck"] = _recheck(out, task, cfg.recheck_n, seed, progress)
    return summary


def _recheck(out: Path, task: Task, n_max: int, seed: int, progress: bool) -> dict[str, Any]:
    """Relax and re-score up to ``n_max`` distinct hits (``matinvent recheck``); its block of summary.json."""
    from matinvent.recheck import HEADLINE, recheck_run

    try:
        result = recheck_run(out, n_max=n_max, seed=seed, task=task, progress=progress)
    except ImportError as exc:  # the MLIP extra is optional
        msg = f"re-checking the hits needs the MLIP extra ({exc}); run 'matinvent recheck {out}' later"
        warnings.warn(msg, stacklevel=3)
        return {"skipped": str(exc)}
    return {k: result.get(k) for k in HEADLINE}


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
