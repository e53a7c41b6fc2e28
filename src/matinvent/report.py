"""Report of one or several ``matinvent optimize`` runs: curves (PNG), a metrics table, top candidates.

``write_report(run_dirs, out_dir)`` reads each RUN_DIR (``memory.sqlite``, ``metrics.csv``,
``summary.json``) and writes into ``out_dir``:

- ``reward.png``, ``hits.png`` and one ``property_<name>.png`` per property, all against cumulative
  evaluations, the runs overlaid (needs matplotlib, ``pip install matinvent[plot]``; without it the
  plots are skipped with one warning);
- ``candidates/<run>_<rank>_<formula>.cif``: the top candidates of each run;
- ``report.md``: the metrics table, the plots and the top-candidate tables.

Which folders are reportable:

- ``memory.sqlite`` is required (the candidates come from it);
- a finished run has ``summary.json``, whose numbers are reported as written (keys it lacks are
  recomputed from the memory);
- a run still in progress (``memory.sqlite`` + ``metrics.csv``, no ``summary.json``) is reported
  from ``metrics_from_memory`` and ``metrics.csv`` and marked "(in progress)"; its task, seed and
  windows come from ``run.json`` when present, else they are shown as "?". A ``summary.json`` with
  ``"in_progress": true`` is marked too;
- anything else raises ``FileNotFoundError`` naming the folder and the missing file.

A missing ``metrics.csv`` next to a ``summary.json`` only drops that run from the curves (warning).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matinvent.memory import FIXED, SCORES, read_memory
from matinvent.metrics import DIVERSITY_BUDGET, N_HITS, metrics_from_memory
from matinvent.report_plots import plot_runs

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(?P<name>[A-Za-z_]\w*)\s*:?\s*(?P<c>{_NUM})\s*(?:±|\+/-|\+-)\s*(?P<t>{_NUM})")
_SIDE = re.compile(rf"^\s*(?P<name>[A-Za-z_]\w*)\s*:?\s*(?P<op><=|>=|<|>|≤|≥)\s*(?P<x>{_NUM})")
_SAFE = re.compile(r"[^A-Za-z0-9.-]+")  # formulas in CIF names: no "_", which separates the name's fields


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
    in_progress: bool = False
    label: str = ""


# ----------------------------------------------------------------------------------- reading


def parse_windows(text: Any) -> dict[str, tuple[float, float]]:
    """``{prop: (low, high)}`` from window text such as ``"band_gap 3 ± 0.25; formation_energy < -2.5"``.

    Accepts a ``;``/newline-separated string, a list of such strings or a ``{prop: "3 ± 0.25"}`` mapping;
    one-sided windows get an infinite bound; parts that do not parse are skipped.
    """
    if isinstance(text, dict):
        parts = [f"{k} {v}" for k, v in text.items()]
    elif isinstance(text, list | tuple):
        parts = [str(p) for p in text]
    elif isinstance(text, str):
        parts = re.split(r"[;\n]", text)
    else:
        return {}
    out: dict[str, tuple[float, float]] = {}
    for part in parts:
        part = part.replace("−", "-")
        if m := _RANGE.match(part):
            c, t = float(m["c"]), abs(float(m["t"]))
            out[m["name"]] = (c - t, c + t)
        elif m := _SIDE.match(part):
            x = float(m["x"])
            out[m["name"]] = (-math.inf, x) if m["op"] in ("<", "<=", "≤") else (x, math.inf)
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
    skip = set(FIXED) | set(SCORES) | {"id", "created"}
    return [c for c in df.columns if c not in skip]


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
    summary: dict[str, Any] = json.loads(sum_path.read_text()) if not in_progress else {}
    in_progress = in_progress or bool(summary.get("in_progress"))
    run_json = path / "run.json"  # written by optimize at the start: task, method, seed, windows of a live run
    if run_json.exists():
        started = json.loads(run_json.read_text())
        for key in ("task", "method", "seed", "budget", "prior", "windows", "properties"):
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
    return Run(path, name, summary, memory, curves, list(props), parse_windows(summary.get("windows")), in_progress)


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


def _write_cifs(run: Run, cands: pd.DataFrame, cand_dir: Path) -> list[str | None]:
    """Write each candidate's CIF; returns file names (None where the row has no CIF)."""
    cand_dir.mkdir(parents=True, exist_ok=True)
    stale = re.compile(rf"^{re.escape(run.name)}_\d+_[^_]*\.cif$")
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
    return names


# ----------------------------------------------------------------------------------- plots


def _fmt(x: Any, spec: str = ".3g", none: str = "n/a") -> str:
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


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _metrics_row(run: Run) -> list[Any]:
    s = run.summary
    hits = s.get("hits") or 0
    burden = _fmt(s.get("burden"), ".2f", none=f"n/a ({hits} hits)")
    div = _fmt(s.get("diversity_ratio"), ".3f")
    if div != "n/a" and s.get("diversity_ratio_at") is None:
        div += " (running)"
    validity = s.get("validity_rate")
    return [
        run.name + (" (in progress)" if run.in_progress else ""),
        s.get("task") or "?",
        s.get("method") or "?",
        "?" if s.get("seed") is None else s["seed"],
        s.get("evaluations", 0),
        hits,
        burden,
        _fmt(s.get("evals_per_hit"), ".1f"),
        div,
        _fmt(None if validity is None else 100 * validity, ".1f") + ("%" if validity is not None else ""),
        _duration(s.get("wall_s")),
    ]


def _candidate_section(run: Run, cands: pd.DataFrame, cifs: list[str | None]) -> list[str]:
    s = run.summary
    head = f"### {run.name}: {s.get('task') or '?'}, {run.label}" + (" (in progress)" if run.in_progress else "")
    if not len(cands):
        return [head, "", "No valid crystal yet.", ""]
    n_hits = int((cands["hit"] == 1).sum())
    note = f"{n_hits} distinct hit formula(s) shown first (best reward first), then the best non-hit valid crystals."
    header = ["rank", "formula", "hit", *run.properties, "reward", "iteration", "CIF"]
    rows = []
    for rank, (row, cif) in enumerate(zip(cands.to_dict("records"), cifs, strict=True), start=1):
        props = [_fmt(row.get(p), ".4g") for p in run.properties]
        link = f"[{cif}](candidates/{cif})" if cif else "-"
        hit = "yes" if row["hit"] == 1 else ""
        rows.append([rank, row["formula"], hit, *props, _fmt(row["reward"], ".3f"), int(row["iteration"]), link])
    return [head, "", note, "", *_table(header, rows), ""]


def _markdown(runs: list[Run], plots: list[tuple[str, str]] | None, sections: list[list[str]]) -> str:
    lines = [
        "# MatInvent optimisation report",
        "",
        f"{len(runs)} run(s), generated {datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        "## Metrics",
        "",
    ]
    header = ["run", "task", "method", "seed", "evaluations", "hits", "Burden", "evals/hit", "diversity ratio"]
    lines += _table([*header, "validity", "wall time"], [_metrics_row(r) for r in runs])
    lines += [
        "",
        f"*evaluations*: valid crystals sent to the oracles; *hits*: distinct formulas with every property in its "
        f"window; *Burden*: evaluations when the {N_HITS}th distinct hit arrived / {N_HITS} (lower is better, n/a "
        f"before); *diversity ratio*: distinct valid formulas / evaluations at {DIVERSITY_BUDGET} evaluations "
        "(running before); *validity*: valid / sampled.",
        "",
        "## Runs",
        "",
    ]
    for r in runs:
        s = r.summary
        bits = [f"`{r.path}`", f"task {s.get('task') or '?'}"]
        if s.get("windows"):
            w = s["windows"]
            bits.append("windows `" + ("; ".join(map(str, w)) if isinstance(w, list | tuple) else str(w)) + "`")
        for key in ("prior", "budget", "iterations", "samples"):
            if s.get(key) is not None:
                bits.append(f"{key} {s[key]}")
        lines.append(f"- **{r.name}** ({r.label}){' — in progress' if r.in_progress else ''}: " + ", ".join(bits))
    lines += _recheck_lines(runs)
    lines += ["", "## Curves", ""]
    if plots is None:
        lines.append("Plots skipped: matplotlib is not installed (`pip install matinvent[plot]`).")
    elif not plots:
        lines.append("No curves to plot (no metrics.csv rows yet).")
    for title, fname in plots or []:
        lines += [f"![{title}]({fname})", ""]
    lines += ["", "## Top candidates", ""]
    for sec in sections:
        lines += sec
    return "\n".join(lines).rstrip() + "\n"


def _recheck_lines(runs: list[Run]) -> list[str]:
    """The re-check table (``matinvent recheck`` / end of ``optimize``) of the runs that have one."""
    rows = []
    for r in runs:
        rc = r.summary.get("recheck") or {}
        if rc.get("n_checked") is None:
            continue
        burden = rc.get("burden_rechecked")
        est = " (est.)" if rc.get("burden_rechecked_is_estimate") else ""
        rows.append(
            [
                r.name,
                f"{rc['n_checked']} of {rc.get('n_hits_distinct', '?')}",
                _fmt(rc.get("frac_still_hit"), ".2f"),
                _fmt(rc.get("frac_still_hit_mlip"), ".2f"),
                _fmt(rc.get("median_e_above_hull"), ".3f"),
                _fmt(rc.get("frac_e_hull_le_0.1"), ".2f"),
                _fmt(rc.get("frac_survive"), ".2f"),
                _fmt(s.get("evals_per_hit") if (s := r.summary) else None, ".1f"),
                _fmt(burden, ".1f") + (est if burden is not None else ""),
            ]
        )
    if not rows:
        return []
    header = ["run", "hits checked", "still hit", "still hit (MLIP)", "median E_hull", "E_hull ≤ 0.1", "survive"]
    lines = ["", "## Hits re-checked (relaxed with SevenNet-0, re-scored)", ""]
    lines += _table([*header, "evals/hit", "evals/surviving hit"], rows)
    lines += [
        "",
        "*still hit*: the task's oracles on the relaxed structure keep every property in its window; *MLIP*: the "
        "same with the MLIP's own E_form / moduli; *E_hull* (eV/atom) vs the shipped MP-20 hull; *survive*: still a "
        "hit and E_hull ≤ 0.1; *evals/surviving hit*: evaluations / (distinct hits × survive fraction), an estimate "
        "when only a subset was checked. Details: `recheck.json`, `recheck.csv`, relaxed CIFs in `recheck/`.",
    ]
    return lines


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


def write_report(run_dirs: list[Path], out_dir: Path | None = None, top: int = 10) -> Path:
    """Write ``report.md`` (+ PNG curves and candidate CIFs) for ``run_dirs``; returns the report path.

    ``out_dir`` defaults to the run's own folder for one run and to ``./report`` for several.
    Raises ``FileNotFoundError`` for a folder that is not a (finished or in-progress) run.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("write_report needs at least one run folder")
    runs = [load_run(p) for p in run_dirs]
    seen: dict[str, int] = {}
    for r in runs:  # unique names for CIF files and headings
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}-{seen[r.name]}"
    _labels(runs)
    out = Path(out_dir) if out_dir is not None else (run_dirs[0] if len(runs) == 1 else Path("report"))
    out.mkdir(parents=True, exist_ok=True)

    for r in runs:
        if not len(r.curves) and not r.in_progress:
            warnings.warn(f"{r.path} has no metrics.csv rows; its curves are left out", stacklevel=2)
    try:
        plots: list[tuple[str, str]] | None = plot_runs(runs, out)
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install matinvent[plot]); skipping the plots", stacklevel=2)
        plots = None

    sections = []
    for r in runs:
        cands = top_candidates(r.memory, top)
        sections.append(_candidate_section(r, cands, _write_cifs(r, cands, out / "candidates")))
    path = out / "report.md"
    path.write_text(_markdown(runs, plots, sections))
    return path
