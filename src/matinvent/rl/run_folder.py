"""The files of an optimisation run folder: reading them back with errors naming the file, and ``--resume`` checks.

``run.json`` records what a run started with: task name, method, seed, the task definition (windows,
targets with ramps and weights, reduce, command oracles) and the full config. ``--resume`` refuses a
run whose task, method, seed, task definition or config differ, naming the first difference. The
operational keys ``OPERATIONAL_KEYS`` (where and how fast it runs, what happens after it) may change;
so may the budget. Keys a run's ``run.json`` lacks (written by an older matinvent) are not compared.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from matinvent.config_io import ConfigError, to_dict
from matinvent.prior.checkpoint import check_finite
from matinvent.rl.config import RLConfig, rl_config_from_dict
from matinvent.rl.trainer import MEMORY, RLTrainer
from matinvent.rl.trajectories import CrystalTrajectory
from matinvent.scoring.tasks import Task

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
# config keys a resumed run may change (where and how it runs, not what it optimises)
OPERATIONAL_KEYS = ("device", "threads", "recheck_n", "executor", "scheduler", "workers")
RUN_KEYS = ("task", "method", "seed", "run_id", "config")  # every run.json has them


def task_definition(task: Task) -> dict[str, Any]:
    """What defines a task's reward, as stored in ``run.json``."""
    return {
        "reduce": task.reduce,
        # ramp_below only where set: run.json files of tasks without it stay as they were (resume compares them)
        "targets": [
            {k: v for k, v in dataclasses.asdict(t).items() if k != "ramp_below" or v is not None} for t in task.targets
        ],
        "oracles": task.oracles,
    }


def read_run_info(path: Path) -> dict[str, Any]:
    """``run.json`` as a mapping with every key of ``RUN_KEYS``; a damaged file is a :class:`ConfigError`."""
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: must hold a JSON object, got {type(info).__name__}")
    for key in RUN_KEYS:
        if key not in info:
            raise ConfigError(f"{path}: missing key '{key}' (not written by matinvent optimize?)")
    if not isinstance(info["config"], dict) or not isinstance(info["run_id"], str):
        raise ConfigError(f"{path}: key 'config' must be a mapping and 'run_id' a string")
    # optional (older runs lack them), but never damaged
    if "task_definition" in info and not isinstance(info["task_definition"], dict):
        raise ConfigError(
            f"{path}: key 'task_definition' must be a mapping, got {type(info['task_definition']).__name__}"
        )
    if "windows" in info and not isinstance(info["windows"], str | dict):
        raise ConfigError(f"{path}: key 'windows' must be text, got {type(info['windows']).__name__}")
    return info


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically (a kill leaves the old file or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def resume_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first difference between the ``run.json`` a run started with and this start's, or ``None``."""
    new = json.loads(json.dumps(new))  # tuples → lists, as stored
    pairs: list[tuple[str, Any, Any]] = [(k, old[k], new[k]) for k in ("task", "method", "seed")]
    if "windows" in old:
        pairs.append(("task windows", old["windows"], new["windows"]))
    old_def = old.get("task_definition")
    old_def = old_def if isinstance(old_def, dict) else {}
    for k, v in new["task_definition"].items():
        if k in old_def:
            pairs.append((f"task {k}", old_def[k], v))
    old_cfg = _flat(old["config"]) if isinstance(old.get("config"), dict) else {}
    for k, v in _flat(new["config"]).items():
        if k.split(".")[0] not in OPERATIONAL_KEYS and k in old_cfg:
            pairs.append((f"config key '{k}'", old_cfg[k], v))
    for what, was, now in pairs:
        if was != now:
            return f"{what} was {was!r}, now {now!r}"
    return None


def _why(path: Path, exc: BaseException) -> str:
    if path.exists() and path.stat().st_size == 0:
        return "the file is empty"
    first = " ".join(str(exc).split(". ")[0].split())[:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_checkpoint(trainer: RLTrainer, path: Path, device: str) -> None:
    """Restore ``trainer`` from ``checkpoint.pt``; a damaged, foreign or non-finite one is a :class:`ConfigError`."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (EOFError, OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"{path}: not a readable checkpoint ({_why(path, exc)})") from exc
    optional = {"unique", "element_balance"}  # added 2026-12-07 and -08: older checkpoints have neither
    missing = [k for k in trainer.state_dict() if k not in optional and (not isinstance(state, dict) or k not in state)]
    if missing:
        raise ConfigError(f"{path}: not a checkpoint of matinvent optimize (missing {', '.join(missing[:3])})")
    if not isinstance(state["agent"], dict):
        raise ConfigError(f"{path}: key 'agent' must hold the model's tensors")
    check_finite(state["agent"], f"{path} (agent)")
    try:
        trainer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ConfigError(f"{path}: does not fit this run ({_why(path, exc)})") from exc


def check_memory(trainer: RLTrainer, out: Path, resumed: bool) -> None:
    """The memory holds exactly the crystals the checkpoint counts (a fresh start: none at all)."""
    path = out / MEMORY
    if not resumed:
        if len(trainer.memory):
            raise ConfigError(f"{path} already holds {len(trainer.memory)} crystals but {out} has no {RUN_FILE}")
        return
    k, m = trainer.iteration, trainer.metrics
    rows, evaluated, last = trainer.memory.counts(trainer.run_id, k)
    if (rows, evaluated) != (m.samples, m.evaluations) or last > k:
        raise ConfigError(
            f"--resume: {path} holds {evaluated} evaluated crystals ({rows} rows) before iteration {k} and rows up "
            f"to iteration {last}, but {out / CHECKPOINT} counts {m.evaluations} ({m.samples}) at iteration {k}"
        )


def check_replay(trainer: RLTrainer) -> None:
    """Every trajectory file the replay buffer refers to exists and loads."""
    for entry in trainer.replay.entries.values():
        path = trainer.replay.dir / f"{entry.key}.safetensors"
        if not path.exists():
            raise ConfigError(f"--resume: {path} is missing (the replay buffer of {CHECKPOINT} refers to it)")
        try:
            CrystalTrajectory.load(path)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type on a damaged file
            raise ConfigError(f"{path}: not a readable trajectory ({exc})") from exc


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metrics rows of iterations not covered by the checkpoint (written just before a kill)."""
    if not path.exists():
        return
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        kept = [r for r in rows if int(r["iteration"]) < iteration]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a metrics table of matinvent optimize ({type(exc).__name__}: {exc})") from exc
    if len(kept) != len(rows):
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(kept)


def adopt_started(cfg: Any, old_config: Any) -> Any:
    """``cfg`` (an :class:`~matinvent.rl.config.RLConfig`) with each key left at its default taken from the config
    the run started with (``run.json``'s), so a run resumed with today's defaults keeps its own settings."""
    if not isinstance(old_config, dict):
        return cfg
    new, default = to_dict(cfg), to_dict(RLConfig())
    for key, was in old_config.items():
        if key in new and key not in OPERATIONAL_KEYS and new[key] == default.get(key) and was != new[key]:
            new[key] = was
    return rl_config_from_dict(new)
