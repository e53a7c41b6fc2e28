"""Exercising one hostile input as a user would, in-process, and judging the outcome.

``run_case(case)`` returns the problems found, each ``(category, detail)``:

- ``traceback``: an exception other than the documented clean error types, a CLI exit code other than
  0 / 2, or a traceback printed;
- ``folder_abort``: a folder, file or table of N items that yields fewer than N rows (or none);
- ``invalid_scored``: a structure that violates the physical checks (``fuzz.checks``) or was made
  invalid on purpose, yet got a finite property or a reward > 0, or a property that is not its own;
- ``invalid_accepted``: a config, task, run or prior folder made invalid on purpose that loaded or ran;
- ``good_refused``: a good structure or file refused; ``unexplained``: a refusal without a reason
  naming the item. Hangs are judged by the parent (``fuzz_inputs.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sqlite3
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from fuzz.checks import cif_violation, frame_violation, value_mismatch
from fuzz.folders import run_argv

Problems = list[tuple[str, str]]
_SCORERS: dict[str, Any] = {}
STATS: Counter[str] = Counter()  # outcomes of the current case (rows, scored, verified, loaded, refused, …)


def cli(argv: list[str]) -> tuple[int | None, str, Problems]:
    """``matinvent.cli.parser.main(argv)`` with captured output: (exit code, stderr, traceback problems)."""
    from matinvent.cli import main

    err = io.StringIO()
    problems: Problems = []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException as exc:  # noqa: BLE001 - everything that escapes main is a finding
            rc = None
            problems.append(("traceback", f"{type(exc).__name__}: {exc} | {_where(exc)}"))
    text = err.getvalue()
    if rc not in (0, 2, None):
        problems.append(("traceback", f"exit code {rc}: {_last_line(text)}"))
    if "Traceback (most recent call last)" in text:
        problems.append(("traceback", "traceback printed: " + text[text.index("Traceback") :][-300:]))
    return rc, text, problems


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[::-1][:3])


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("matinvent ")]
    return (lines[-1] if lines else text.strip()[-200:])[:300]


def _lib(fn, clean: tuple[type[BaseException], ...], *args) -> tuple[Any, str | None, Problems]:
    """``fn(*args)``: (result, clean error message or None, traceback problems)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn(*args), None, []
    except clean as exc:
        return None, f"{type(exc).__name__}: {exc}", []
    except BaseException as exc:  # noqa: BLE001
        return None, None, [("traceback", f"{type(exc).__name__}: {str(exc)[:200]} | {_where(exc)}")]


# --- structure files: cif, extxyz, csv -------------------------------------------------------------
def _score_table(case: dict, scratch: Path) -> tuple[pd.DataFrame | None, str, Problems]:
    if case["mode"] == "cli":
        out = scratch / "scores.csv"
        rc, err, problems = cli(["score", case["path"], "--task", case["task"], "--out", str(out)])
        if rc != 0:
            return None, _last_line(err), problems
        table = pd.read_csv(out, dtype=str, keep_default_na=False)
        for col in (case["task"], "reward", "valid"):
            table[col] = pd.to_numeric(table[col], errors="coerce")
        return table, "", problems
    from matinvent.crystal.record import CrystalError
    from matinvent.io.structure_files import read_structure_items
    from matinvent.scoring.scorer import Scorer, scores_table
    from matinvent.scoring.tasks import load_task

    items, error, problems = _lib(read_structure_items, (FileNotFoundError, CrystalError, ValueError), case["path"])
    if items is None:
        return None, error or "", problems
    if case["task"] not in _SCORERS:
        _SCORERS[case["task"]] = Scorer(load_task(case["task"]))
    scores, _, more = _lib(_SCORERS[case["task"]], (), items.crystals)
    if scores is None:
        return None, "", problems + more
    return scores_table(items.ids, scores.structures, scores, items.reasons), "", problems


def _row_keys(case: dict, table: pd.DataFrame) -> list[str | None]:
    exp = case["exp"]
    if case["kind"] == "cif":
        return list(table["id"].astype(str))
    if case["kind"] == "csv":
        return [str(i) for i in range(len(table))]
    return [
        f"f{i}" if i < exp["intact"] else (rid if rid in exp["frames"] else None) for i, rid in enumerate(table["id"])
    ]


def _independent(case: dict, key: str | None, i: int, value: float) -> str:
    """Why the scored item ``key`` (row ``i``) is invalid or mis-scored, by the checks of ``fuzz.checks``."""
    if case["kind"] == "cif":
        text = (Path(case["path"]) / f"{key}.cif").read_bytes().decode("utf-8-sig", errors="replace")
        why, s = cif_violation(text)
    elif case["kind"] == "extxyz":
        if key is None:
            return ""  # a frame the damage made unrecognisable: nothing to compare it with
        why, s = frame_violation(case["exp"]["frames"][key])
    else:
        df = pd.read_csv(case["path"], encoding_errors="replace")
        text = df["cif"].iloc[i] if "cif" in df.columns and i < len(df) else None
        if not isinstance(text, str):
            return "a row without a CIF was scored"
        why, s = cif_violation(text)
    return why or value_mismatch(s, case["task"], value)


def structure_case(case: dict, scratch: Path) -> Problems:
    table, error, problems = _score_table(case, scratch)
    exp, prop = case["exp"], case["task"]
    if table is None:
        if not exp.get("error_ok") and not any(p[0] == "traceback" for p in problems):
            problems.append(("folder_abort", f"no rows: {error[:300]}"))
        return problems
    n = len(table)
    STATS["rows"] += n
    if (exp["rows"] is not None and n != exp["rows"]) or n < exp["min_rows"]:
        problems.append(("folder_abort", f"{n} rows for {exp['rows'] or exp['min_rows']} items"))
    keys = _row_keys(case, table)
    for key in exp["good"]:
        if key not in keys:
            problems.append(("folder_abort", f"good item {key} has no row"))
    for i, key in enumerate(keys):
        row = table.iloc[i]
        value, reward, valid = float(row[prop]), float(row["reward"]), int(row["valid"]) == 1
        scored = math.isfinite(value) or reward > 0
        if not valid and not str(row["reason"]).strip():
            problems.append(("unexplained", f"row {i} ({row['id']}) invalid without a reason"))
        if key in exp["good"]:
            want = exp["good"][key]
            if not (valid and (math.isfinite(value) or math.isnan(want))):  # HHI has no data for some elements
                problems.append(("good_refused", f"good item {key}: {row['reason'][:200]}"))
            elif abs(value - want) > 1e-6 * max(1.0, abs(want)):
                problems.append(("invalid_scored", f"good item {key} scored {value:.6g}, expected {want:.6g}"))
            continue
        label = exp["labels"].get(key, "any") if key is not None else "any"
        if label == "accept" and not valid:  # (HHI has no data for some elements: a valid row may hold NaN)
            problems.append(("good_refused", f"{key} ({case['mutation']}): {row['reason'][:200]}"))
        if not scored:
            STATS["refused"] += 1
            continue
        STATS["scored"] += 1
        if label == "reject":
            problems.append(("invalid_scored", f"{key} made invalid ({case['mutation']}) scored {prop} {value:.6g}"))
            continue
        STATS["verified"] += 1
        if why := _independent(case, key, i, value):
            problems.append(("invalid_scored", f"{key} ({case['mutation']}) scored {prop} {value:.6g}: {why[:200]}"))
    return problems


# --- settings files: rl_config, pretrain_config, task ----------------------------------------------
def _non_finite(obj: Any, prefix: str = "") -> str:
    import dataclasses

    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            if bad := _non_finite(v, f"{prefix}{f.name}."):
                return bad
        elif isinstance(v, float) and not math.isfinite(v):
            return f"{prefix}{f.name} = {v}"
    return ""


def settings_case(case: dict, scratch: Path) -> Problems:
    from matinvent.config_io import ConfigError
    from matinvent.prior.pretrain_config import load_pretrain_config
    from matinvent.rl import load_rl_config
    from matinvent.scoring.tasks import load_task

    kind, path, label, base = case["kind"], case["path"], case["label"], Path(case["base"])
    loader = {"rl_config": load_rl_config, "pretrain_config": load_pretrain_config, "task": load_task}[kind]
    obj, error, problems = _lib(loader, (ConfigError,), path)
    STATS["loaded" if obj is not None else "refused"] += 1
    if obj is not None:
        if label == "reject":
            problems.append(("invalid_accepted", f"loaded ({case['mutation']})"))
        elif kind != "task" and (bad := _non_finite(obj)):
            problems.append(("invalid_accepted", f"loaded with {bad}"))
    elif error is not None:
        if label == "accept":
            problems.append(("good_refused", error[:300]))
        if Path(path).name not in error:
            problems.append(("unexplained", f"the error does not name the file: {error[:200]}"))
    if case["mode"] != "cli":
        return problems
    if kind == "rl_config" and label == "reject":  # a config that loads would start a real run
        out = scratch / "run"
        argv = ["optimize", "--task", "density", "--budget", "1", "--out", str(out), "--config", path]
        rc, err, more = cli([*argv, "--prior", str(base / "prior"), "--threads", "1"])
        problems += more + ([("invalid_accepted", "matinvent optimize ran it")] if rc == 0 else [])
    elif kind == "pretrain_config":
        argv = ["pretrain", "--data", str(scratch / "no-data"), "--config", path, "--out", str(scratch / "out")]
        rc, err, more = cli(argv)
        problems += more
        if rc == 2 and label == "reject" and Path(path).name not in err:
            passed = "no-data" in err  # the config was taken and the missing data reported instead
            problems.append(("invalid_accepted" if passed else "unexplained", _last_line(err)))
    elif kind == "task" and obj is not None:
        out = scratch / "scores.csv"
        rc, err, more = cli(["score", str(base / "good"), "--task", path, "--out", str(out)])
        problems += more
        if rc == 0:
            table = pd.read_csv(out)
            if len(table) != 3:
                problems.append(("folder_abort", f"{len(table)} rows for 3 structures"))
            if "print('" in case["mutation"] and table["energy"].notna().any():
                problems.append(("invalid_accepted", f"{case['mutation']}: printed text read as {table['energy'][0]}"))
    return problems


# --- run and prior folders -------------------------------------------------------------------------
def run_case_folder(case: dict, scratch: Path) -> Problems:
    from matinvent.rl.run_lock import RunLock

    run, base, opts = Path(case["path"]), Path(case["base"]), case["opts"]
    argv = run_argv(base, run, opts["budget"], resume=opts["resume"])
    with RunLock(run) if opts["locked"] else contextlib.nullcontext():
        rc, err, problems = cli(argv)
    STATS[f"exit {rc}"] += 1
    if rc == 0:
        if case["label"] == "refuse":
            problems.append(("invalid_accepted", f"--resume went on ({case['mutation']})"))
        problems += _run_integrity(run)
    elif rc == 2:
        if case["label"] == "accept":
            problems.append(("good_refused", _last_line(err)))
        if str(run) not in err:
            problems.append(("unexplained", f"the error does not name the run folder: {_last_line(err)}"))
    return problems


def _run_integrity(run: Path) -> Problems:
    """A finished resume: no duplicated crystal, as many evaluated rows as the summary counts, the lock released."""
    with contextlib.closing(sqlite3.connect(str(run / "memory.sqlite"))) as conn:
        rows, distinct, evaluated = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT iteration || ':' || idx), SUM(valid) FROM crystals"
        ).fetchone()
    summary = json.loads((run / "summary.json").read_text())
    problems = []
    if rows != distinct:
        problems.append(("invalid_accepted", f"memory holds {rows - distinct} duplicated crystals"))
    if evaluated != summary["evaluations"]:
        problems.append(
            ("invalid_accepted", f"memory holds {evaluated} evaluated, summary says {summary['evaluations']}")
        )
    if (run / ".lock").exists():
        problems.append(("invalid_accepted", "the .lock file was left behind"))
    return problems


def prior_case(case: dict, scratch: Path) -> Problems:
    import torch

    from matinvent.config_io import ConfigError
    from matinvent.prior.checkpoint import load_prior

    path = case["path"]
    if case["mode"] == "cli":
        argv = ["sample", "--n", "2", "--checkpoint", path, "--out", str(scratch / "samples"), "--threads", "1"]
        rc, err, problems = cli(argv)
        loaded, error = rc == 0, _last_line(err) if rc == 2 else None
    else:
        model, error, problems = _lib(load_prior, (ConfigError, FileNotFoundError), path)
        loaded = model is not None
        if loaded and not all(
            bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()
        ):
            problems.append(("invalid_accepted", "loaded with non-finite weights"))
    STATS["loaded" if loaded else "refused"] += 1
    if loaded and case["label"] == "refuse":
        problems.append(("invalid_accepted", f"loaded ({case['mutation']})"))
    if error is not None and path not in error:
        problems.append(("unexplained", f"the error does not name the prior folder: {error[:200]}"))
    return problems


def run_case(case: dict, scratch: Path) -> Problems:
    """The problems of one case (see the module docstring); its outcomes are counted in ``STATS``."""
    STATS.clear()
    if case["kind"] in ("cif", "extxyz", "csv"):
        return structure_case(case, scratch)
    if case["kind"] in ("rl_config", "pretrain_config", "task"):
        return settings_case(case, scratch)
    return run_case_folder(case, scratch) if case["kind"] == "run_folder" else prior_case(case, scratch)
