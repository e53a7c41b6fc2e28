"""Running an optimisation in a folder: validation, run.json, checkpoints, metrics, summary.

:func:`optimize` drives an :class:`~matinvent.rl.trainer.RLTrainer` (one iteration per ``step``). A run folder holds

- ``run.json``       — task and its definition, method, seed, config, run id: written once every check
  passed, and compared on ``--resume`` (:mod:`matinvent.rl.run_folder`);
- ``.lock``          — held by the running process (:mod:`matinvent.rl.run_lock`): one run per folder;
- ``memory.sqlite``  — every sampled crystal, committed per batch as soon as it is scored;
- ``oracle_cache.sqlite`` — every oracle result, committed the moment it arrives (so a kill in the
  middle of a batch loses none; timeouts and lost workers are not kept, and are retried);
- ``checkpoint.pt``  — agent + optimiser, RNG states, diversity counts, replay index, metrics,
  written atomically after every iteration (loaded with ``weights_only=True``);
- ``replay/``        — trajectories of the replay buffer's crystals;
- ``metrics.csv``    — one row per iteration; ``summary.json`` at the end; ``agent/`` — the
  fine-tuned model as a prior checkpoint folder (``matinvent sample --checkpoint RUN/agent``).

A run killed at any point resumes exactly: the checkpoint restores iteration k's starting state,
the same crystals are sampled again, and rows already in memory for that iteration are reused
instead of calling the oracles again; within a batch killed half-way, the oracle cache serves the
finished structures. The oracles run in-process, in local workers or on Dask (``executor``,
``scheduler``, ``workers``; :func:`matinvent.scoring.executors.make_executor`).
"""

from __future__ import annotations

import copy
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

from matinvent.config_io import MAX_SEED, ConfigError, default_threads
from matinvent.config_io import to_dict as config_to_dict
from matinvent.crystal.constraints import merged_constraints
from matinvent.crystal.record import Crystal
from matinvent.crystal.validity import gate_flags
from matinvent.diffusion import respaced_timesteps
from matinvent.prior.checkpoint import load_prior, prior_constraints, resolve_checkpoint, save_prior
from matinvent.rl.config import RLConfig, resolve, validate
from matinvent.rl.methods import METHOD_CLASSES
from matinvent.rl.run_folder import (
    CHECKPOINT,
    METRICS,
    RUN_FILE,
    adopt_started,
    append_metrics,
    check_memory,
    check_replay,
    load_checkpoint,
    read_run_info,
    resume_mismatch,
    task_definition,
    truncate_metrics,
    write_json,
)
from matinvent.rl.run_lock import RunLock
from matinvent.rl.tensorboard import TensorBoardLogger
from matinvent.rl.trainer import MEMORY, RLTrainer
from matinvent.scoring.executors import make_executor
from matinvent.scoring.rewards import stability_target
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import Task, load_task

SUMMARY = "summary.json"
ORACLE_CACHE = "oracle_cache.sqlite"  # every oracle result, committed as it arrives (matinvent.scoring.oracle_cache)
MAX_EMPTY_ITERATIONS = 10  # consecutive iterations without a valid crystal before a run gives up
MAX_BUDGET = 1_000_000_000  # oracle evaluations


def validity_flags(crystals: list[Crystal | None], mode: str) -> np.ndarray:
    """Which crystals go to the oracles under the gate ``mode`` (``validity.GATES``; old names mapped)."""
    return gate_flags(crystals, mode)[0]


def check_method(method: str) -> None:
    if method not in METHOD_CLASSES:
        raise ConfigError(f"unknown method '{method}' (choose from: {', '.join(METHOD_CLASSES)})")


def _check_int(key: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key} must be an integer in [{low}, {high}], got {value!r}")


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
    tensorboard: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) an optimisation until ``budget`` oracle evaluations; returns the summary.

    ``scorer`` replaces the task's oracles (tests, custom pipelines); ``callback(event, iteration)``
    is called with ``"scored"`` after each batch is committed to memory and ``"checkpoint"`` after
    each checkpoint; ``tensorboard``: also log each metrics row there (:mod:`matinvent.rl.tensorboard`).
    Everything is checked before ``run.json`` is written; the run holds ``out``'s
    lock (:mod:`matinvent.rl.run_lock`) throughout, so a second process on ``out`` fails at once.
    """
    # ---- validate everything before touching the run folder -----------------------------------
    check_method(method)
    task = task if isinstance(task, Task) else load_task(task)
    cfg = validate(copy.deepcopy(cfg) if cfg is not None else RLConfig())
    if resume and (Path(out) / RUN_FILE).exists():
        try:  # keys left at today's defaults keep the values the run started with
            cfg = adopt_started(cfg, read_run_info(Path(out) / RUN_FILE).get("config"))
        except ConfigError:
            pass  # a damaged run.json: _start says so below
    cfg = resolve(cfg, task)  # relax and stability: auto settled, recorded in run.json
    prior_path = resolve_checkpoint(cfg.prior)
    # the task's, the prior's own (a fine-tuned prior was trained under them) and the config's: all hold; in run.json
    cfg.constraints = merged_constraints(task.constraints, prior_constraints(prior_path), cfg.constraints).to_dict()
    _check_int("budget", budget, 1, MAX_BUDGET)
    _check_int("seed", seed, 0, MAX_SEED)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' is '{cfg.device}' but CUDA is not available")
    torch.set_num_threads(cfg.threads or default_threads())  # 0: half the CPUs (two jobs share a machine well)
    prior = load_prior(prior_path, device=cfg.device)
    n_steps = len(respaced_timesteps(prior.config.timesteps, cfg.sample_steps or prior.config.sample_steps))
    if cfg.skip_last >= n_steps:
        raise ConfigError(f"config key 'skip_last' ({cfg.skip_last}) must be < the {n_steps} sampler steps")
    tb = TensorBoardLogger(tensorboard) if tensorboard is not None else None  # not installed: fails here
    own_scorer = scorer is None  # hits are re-checked with the task's oracles only when they scored the run
    if scorer is None:
        # each call below overrides its gate: the loop gates with cfg.validity itself
        relax_kw = {"max_steps": cfg.relax_max_steps} if cfg.relax else {}  # one relaxation serves every property
        if cfg.relax and cfg.relax_engine != "ase":  # the earlier defaults stay out of the cache key
            relax_kw["engine"] = cfg.relax_engine
        if cfg.relax and cfg.relax_fmax != 0.05:
            relax_kw["fmax"] = cfg.relax_fmax
        stability = stability_target(cfg.stability_max, cfg.stability_ramp) if cfg.stability == "hull" else None
        executor = make_executor(cfg.executor, cfg.scheduler, cfg.workers, cfg.oracle_timeout_s)  # started lazily
        cache = Path(out) / ORACLE_CACHE  # created at the first oracle result: a failed start leaves no file
        scorer = Scorer(
            task, relax=cfg.relax, validity=cfg.validity, timeout_s=cfg.oracle_timeout_s, executor=executor,
            cache=cache, stability=stability, **relax_kw,
        )  # fmt: skip
    run_info = {
        "task": task.name,
        "method": method,
        "seed": seed,
        "budget": budget,
        "prior": str(prior_path),
        "windows": task.window_text(),
        "properties": task.properties,
        "task_definition": task_definition(task),
        "config": config_to_dict(cfg),
    }
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with RunLock(out):
            trainer = _start(out, run_info, resume, cfg, task, scorer, prior, method, seed)
            _run(trainer, out, budget, max_iterations, progress, callback, tb)
            info = {"fine_tuned_from": str(prior_path), "task": task.name, "method": method}
            info["trained_under_constraints"] = cfg.constraints  # sample it with the same flags to stay inside
            save_prior(trainer.fine_tuned(), out / "agent", info)
            summary = {k: run_info[k] for k in ("task", "method", "seed", "budget")}
            # the headline: filled in by the re-check of the hits below (None until then)
            summary.update(evals_per_surviving_hit=None, survival=None, surviving_hits=None)
            summary.update({k: run_info[k] for k in ("prior", "windows", "properties")})
            summary.update(trainer.metrics.summary())
            summary["unique_by"] = cfg.unique_by  # what distinct hits and the diversity ratio count
            summary.update(
                {
                    "iterations": trainer.iteration,
                    "wall_s": round(trainer.elapsed, 1),
                    "finished": trainer.metrics.evaluations >= budget,
                }
            )
            (out / SUMMARY).write_text(json.dumps(_jsonable(summary), indent=2))
            if summary["finished"] and cfg.recheck_n > 0 and trainer.metrics.hits > 0 and own_scorer:
                summary["recheck"] = _recheck(out, task, cfg.recheck_n, seed, progress)
                if "skipped" not in summary["recheck"]:
                    summary = json.loads((out / SUMMARY).read_text())  # with the headline the re-check wrote
    finally:
        if own_scorer:
            scorer.close()  # its executor's workers (a Dask cluster) and the oracle cache
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a start that failed at once leaves no folder behind
    return summary


def _start(
    out: Path,
    run_info: dict[str, Any],
    resume: bool,
    cfg: RLConfig,
    task: Task,
    scorer: Scorer,
    prior: Any,
    method: str,
    seed: int,
) -> RLTrainer:
    """Check the run folder (``--resume``: against what the run started with), build the trainer, write run.json."""
    started = (out / RUN_FILE).exists()
    if started and not resume:
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it (or choose another --out)")
    if started:
        old = read_run_info(out / RUN_FILE)
        diff = resume_mismatch(old, run_info)
        if diff is not None:
            raise ConfigError(f"--resume: {diff} ({out / RUN_FILE}); choose another --out for a changed run")
        if (out / CHECKPOINT).exists() and not (out / MEMORY).exists():
            raise ConfigError(f"--resume: {out / MEMORY} is missing but {out / CHECKPOINT} exists")
        run_info["run_id"] = old["run_id"]
    else:
        leftovers = [name for name in (CHECKPOINT, METRICS) if (out / name).exists()]
        if leftovers:
            raise ConfigError(f"{out} holds {', '.join(leftovers)} of a run but no {RUN_FILE}; choose another --out")
        run_info["run_id"] = uuid.uuid4().hex[:12]
    trainer = RLTrainer(cfg, task, scorer, prior, method, seed, out, run_info["run_id"])
    try:
        if started and (out / CHECKPOINT).exists():
            load_checkpoint(trainer, out / CHECKPOINT, cfg.device)
        check_memory(trainer, out, resumed=started)
        check_replay(trainer)
        truncate_metrics(out / METRICS, trainer.iteration)
        write_json(out / RUN_FILE, run_info)  # only now: every check passed
    except BaseException:
        trainer.close()
        raise
    return trainer


def _run(
    trainer: RLTrainer,
    out: Path,
    budget: int,
    max_iterations: int | None,
    progress: bool,
    callback: Callable[[str, int], None] | None,
    tb: TensorBoardLogger | None = None,
) -> None:
    """Iterate until the budget (or ``max_iterations``), checkpointing after each step."""

    def save_checkpoint() -> None:
        tmp = out / (CHECKPOINT + ".tmp")
        torch.save(trainer.state_dict(), tmp)
        os.replace(tmp, out / CHECKPOINT)
        trainer.replay.collect_garbage()

    metrics = trainer.metrics
    bar = tqdm(
        total=budget, initial=min(metrics.evaluations, budget), unit="eval", disable=not progress, dynamic_ncols=True
    )
    bar.set_description(f"{trainer.method} on {trainer.task.name}")
    if progress:  # slow oracles (an MLIP relaxation, DFT): the bar moves as each structure's result arrives
        trainer.scorer.on_progress = lambda stage, done, total: bar.set_postfix_str(
            f"hits={trainer.metrics.hits}, {stage} {done}/{total}", refresh=True
        )
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
            append_metrics(out / METRICS, row)
            if tb is not None:
                tb.log(row)
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
        if tb is not None:
            tb.close()


def _recheck(out: Path, task: Task, n_max: int, seed: int, progress: bool) -> dict[str, Any]:
    """Relax and re-score up to ``n_max`` distinct hits (``matinvent recheck``); its block of summary.json."""
    from matinvent.evaluation.recheck import HEADLINE, recheck_run

    try:
        result = recheck_run(out, n_max=n_max, seed=seed, task=task, progress=progress)
    except ImportError as exc:  # the MLIP extra is optional
        msg = f"re-checking the hits needs the MLIP extra ({exc}); run 'matinvent recheck {out}' later"
        warnings.warn(msg, stacklevel=3)
        return {"skipped": str(exc)}
    return {k: result.get(k) for k in HEADLINE}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
