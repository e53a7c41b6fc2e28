"""The run folders a report reads: :class:`Run`, the top candidates, their CIFs and the metrics-table cells.

Shared by ``report.md`` (:mod:`matinvent.report.markdown`) and ``report.html`` (:mod:`matinvent.report.html`).

Which folders are reportable:

- ``memory.sqlite`` is required (the candidates come from it);
- a finished run has ``summary.json``, whose numbers are reported as written (keys it lacks are
  recomputed from the memory);
- a run still in progress (``memory.sqlite`` + ``metrics.csv``, no ``summary.json``) is reported
  from ``metrics_from_memory`` and ``metrics.csv`` and marked "(in progress)"; its task, seed and
  windows come from ``run.json`` when present, else they are shown as "?". A ``summary.json`` with
  ``"in_progress": true`` is marked too;
- the numeric property windows (plot shading) come from the task definition in ``run.json``
  (``task_definition.targets``: kind, center ± tolerance or threshold); a folder without one
  (older matinvent) shows its window text only;
- anything else raises ``FileNotFoundError`` naming the folder and the missing file.

A missing ``metrics.csv`` next to a ``summary.json`` only drops that run from the curves (warning).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matinvent.io.run_memory import FIXED, RELAXED, SCORES, read_memory
from matinvent.oracles import oracle_unit
from matinvent.rl.metrics import DIVERSITY_BUDGET, N_HITS, metrics_from_memory

_SAFE = re.compile(r"[^A-Za-z0-9.-]+")  # formulas in CIF names: no "_", which separates the name's fields
CANDIDATES = "candidates"  # folder of the candidate CIFs, inside the report folder


@dataclass
class Run:
    """One run folder as read for the report."""

    path: Path
    name: str
    summary: dict[str, Any]
    memory: pd.DataFrame
    curves: pd.DataFrame
    properties: list[str]
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    in_progress: bool = False
    label: str = ""


# ----------------------------------------------------------------------------------- reading


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def target_windows(definition: Any, source: str = "run.json") -> dict[str, tuple[float, float]]:
    """``{prop: (low, high)}`` in each property's unit from a stored task definition's ``targets``.

    ``range`` targets give ``center ± tolerance``, ``below``/``above`` an infinite other bound.
    ``None`` or a definition without ``targets`` gives ``{}``; a malformed target raises ``ValueError``
    naming ``source`` and the key.
    """
    if definition is None:
        return {}
    targets = definition.get("targets") if isinstance(definition, dict) else definition
    if targets is None:
        return {}
    if not isinstance(targets, list):
        raise ValueError(f"{source}: task_definition.targets must be a list, got {type(targets).__name__}")
    out: dict[str, tuple[float, float]] = {}
    for i, t in enumerate(targets):
        key = f"{source}: task_definition.targets[{i}]"
        if not isinstance(t, dict) or not isinstance(t.get("prop"), str):
            raise ValueError(f"{key} must be a mapping with a string 'prop'")
        kind = t.get("kind")
        if kind == "range":
            c, tol = _number(t.get("center"), f"{key}.center"), abs(_number(t.get("tolerance"), f"{key}.tolerance"))
            out[t["prop"]] = (c - tol, c + tol)
        elif kind in ("below", "above"):
            x = _number(t.get("threshold"), f"{key}.threshold")
            out[t["prop"]] = (-math.inf, x) if kind == "below" else (x, math.inf)
        else:
            raise ValueError(f"{key}.kind must be 'range', 'below' or 'above', got {kind!r}")
    return out


def _read_curves(path: Path) -> pd.DataFrame:
    """``metrics.csv``, dropping a last line still being written; empty frame if missing."""
    if not path.exists():
        return pd.DataFrame()
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    lines = text.splitlines()
    if len(lines) < 2:
        return pd.DataFrame()
    df = pd.read_csv(StringIO(text))
    df = df.apply(pd.to_numeric, errors="coerce")
    return df.dropna(subset=[c for c in ("evaluations",) if c in df]).reset_index(drop=True)


def _memory_properties(df: pd.DataFrame) -> list[str]:
    skip = set(FIXED) | set(SCORES) | {"id", "created"} | {c for c, _ in RELAXED}
    return [c for c in df.columns if c not in skip]


def _units(props: list[str], definition: Any) -> dict[str, str]:
    """Each property's unit: the task's command oracle spec (``unit``), else the built-in oracle's; ``""`` unknown."""
    specs = definition.get("oracles") if isinstance(definition, dict) else None
    specs = specs if isinstance(specs, dict) else {}
    out = {}
    for p in props:
        spec = specs.get(p)
        unit = spec.get("unit") if isinstance(spec, dict) else None
        out[p] = unit if isinstance(unit, str) and unit else oracle_unit(p)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a ``ValueError`` naming the file."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(data).__name__}")
    return data


def load_run(run_dir: str | Path) -> Run:
    """Read one run folder (see the module docstring for what is required)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} does not exist")
    mem_path, sum_path, csv_path = path / "memory.sqlite", path / "summary.json", path / "metrics.csv"
    if not mem_path.exists():
        raise FileNotFoundError(f"run folder {path} has no memory.sqlite (not a matinvent optimize run?)")
    if not sum_path.exists() and not csv_path.exists():
        raise FileNotFoundError(
            f"run folder {path} has no summary.json (and no metrics.csv, so it is not a run in progress either)"
        )
    memory = read_memory(path)
    curves = _read_curves(csv_path)
    in_progress = not sum_path.exists()
    summary: dict[str, Any] = _read_json(sum_path) if not in_progress else {}
    in_progress = in_progress or bool(summary.get("in_progress"))
    run_json = path / "run.json"  # written by optimize at the start: task, method, seed, windows of a live run
    if run_json.exists():
        started = _read_json(run_json)
        for key in ("task", "method", "seed", "budget", "prior", "windows", "properties", "task_definition"):
            if key in started:
                summary.setdefault(key, started[key])

    derived = metrics_from_memory(memory).summary()
    derived["method"] = str(memory["method"].iloc[0]) if len(memory) else "?"
    derived["iterations"] = int(memory["iteration"].nunique())
    if len(curves) and "elapsed" in curves:
        derived["wall_s"] = float(curves["elapsed"].iloc[-1])
    for key, value in derived.items():  # summary.json wins; the memory fills in what it lacks
        summary.setdefault(key, value)
    props = summary.get("properties") or _memory_properties(memory)
    summary["properties"] = list(props)
    name = path.resolve().name or "run"
    definition = summary.get("task_definition")
    windows = target_windows(definition, str(run_json))
    return Run(path, name, summary, memory, curves, list(props), windows, _units(props, definition), in_progress)


# ----------------------------------------------------------------------------------- candidates


def top_candidates(memory: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Distinct hit formulas (best reward first, one row each), then the best non-hit valid crystals."""
    if not len(memory) or top <= 0:
        return memory.iloc[0:0]
    df = memory.copy()
    df["_order"] = np.arange(len(df))
    df = df[(df["valid"] == 1) & (df["failed"] != 1)]
    df = df.sort_values(["reward", "_order"], ascending=[False, True], kind="stable")
    hits = df[df["hit"] == 1].drop_duplicates("formula")
    rest = df[(df["hit"] != 1) & ~df["formula"].isin(hits["formula"])].drop_duplicates("formula")
    return pd.concat([hits, rest]).head(top).drop(columns="_order").reset_index(drop=True)


def write_candidate_cifs(run: Run, cands: pd.DataFrame, cand_dir: Path) -> list[str | None]:
    """Write each candidate's CIF (and its relaxed one, ``..._relaxed.cif``, when the loop relaxed); returns the
    generated files' names (None where the row has no CIF)."""
    cand_dir.mkdir(parents=True, exist_ok=True)
    stale = re.compile(rf"^{re.escape(run.name)}_\d+_[^_]*(_relaxed)?\.cif$")
    for old in cand_dir.glob("*.cif"):
        if stale.match(old.name):
            old.unlink()
    names: list[str | None] = []
    for rank, row in enumerate(cands.itertuples(index=False), start=1):
        cif = getattr(row, "cif", None)
        if not isinstance(cif, str) or not cif.strip():
            names.append(None)
            continue
        fname = f"{run.name}_{rank}_{_SAFE.sub('-', str(row.formula)) or 'unknown'}.cif"
        (cand_dir / fname).write_text(cif)
        names.append(fname)
        relaxed = getattr(row, "relaxed_cif", None)
        if isinstance(relaxed, str) and relaxed.strip():
            (cand_dir / fname.replace(".cif", "_relaxed.cif")).write_text(relaxed)
    return names


# ----------------------------------------------------------------------------------- metrics table


def fmt_value(x: Any, spec: str = ".3g", none: str = "n/a") -> str:
    """``x`` formatted with ``spec``; ``none`` for None/NaN/inf, strings as they are."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    if isinstance(x, str):
        return x
    return format(x, spec)


def _duration(s: Any) -> str:
    if s is None or not isinstance(s, int | float) or not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


METRICS_HEADER = (
    "run", "task", "method", "seed", "evaluations", "evals/surviving hit", "survival", "hits", "evals/hit", "Burden",
    "diversity ratio", "validity", "wall time",
)  # fmt: skip
METRICS_LEGEND = (
    "*evals/surviving hit* (the headline): evaluations / the distinct hits that survive the independent re-check "
    "(another MLIP relaxes them; still a hit and E_hull ≤ 0.1 eV/atom), est. when a subset was checked; "
    "*survival*: that fraction of the re-checked hits; "
    f"*evaluations*: valid crystals sent to the oracles; *hits*: distinct formulas with every property in its "
    f"window; *Burden*: evaluations when the {N_HITS}th distinct hit arrived / {N_HITS} (lower is better, n/a "
    f"before); *diversity ratio*: distinct valid formulas / evaluations at {DIVERSITY_BUDGET} evaluations "
    "(running before); *validity*: valid / sampled."
)


def metrics_row(run: Run) -> list[Any]:
    """One row of the metrics table (cells as shown, in ``METRICS_HEADER`` order)."""
    s = run.summary
    hits = s.get("hits") or 0
    burden = fmt_value(s.get("burden"), ".2f", none=f"n/a ({hits} hits)")
    div = fmt_value(s.get("diversity_ratio"), ".3f")
    if div != "n/a" and s.get("diversity_ratio_at") is None:
        div += " (running)"
    validity = s.get("validity_rate")
    return [
        run.name + (" (in progress)" if run.in_progress else ""),
        s.get("task") or "?",
        s.get("method") or "?",
        "?" if s.get("seed") is None else s["seed"],
        s.get("evaluations", 0),
        _surviving(s),
        fmt_value(s.get("survival"), ".2f"),
        hits,
        fmt_value(s.get("evals_per_hit"), ".1f"),
        burden,
        div,
        fmt_value(None if validity is None else 100 * validity, ".1f") + ("%" if validity is not None else ""),
        _duration(s.get("wall_s")),
    ]


def _surviving(s: dict[str, Any]) -> str:
    value = s.get("evals_per_surviving_hit")
    if value is None:
        return "n/a"
    estimate = (s.get("recheck") or {}).get("burden_rechecked_is_estimate")
    return fmt_value(value, ".1f") + (" (est.)" if estimate else "")


def _labels(runs: list[Run]) -> None:
    for r in runs:
        seed = r.summary.get("seed")
        r.label = f"{r.summary.get('method') or '?'} (seed {'?' if seed is None else seed})"
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    for r in runs:
        if counts[r.label] > 1:
            r.label = f"{r.label} [{r.name}]"


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """:func:`load_run` of each folder, with unique names (for file names and headings) and plot labels."""
    if not run_dirs:
        raise ValueError("a report needs at least one run folder")
    runs = [load_run(p) for p in run_dirs]
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}-{seen[r.name]}"
    _labels(runs)
    return runs


def default_out_dir(run_dirs: list[Path]) -> Path:
    """The run's own folder for one run, ``./report`` for several."""
    return Path(run_dirs[0]) if len(run_dirs) == 1 else Path("report")
