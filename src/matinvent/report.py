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

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(?P<name>[A-Za-z_]\w*)\s*:?\s*(?P<c>{_NUM})\s*(?:±|\+/-|\+-)\s*(?P<t>{_NUM})")
_SIDE = re.compile(rf"^\s*(?P<name>[A-Za-z_]\w*)\s*:?\s*(?P<op><=|>=|<|>|≤|≥)\s*(?P<x>{_NUM})")
_SAFE = re.compile(r"[^A-Za-z0-9.-]+")  # formulas in CIF names: no "_", which separates the name's fields
_SAFE_PROP = re.compile(r"[^A-Za-z0-9_.-]+")


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


def _figure_class() -> Any:
    """matplotlib's ``Figure`` with the Agg canvas (no pyplot, no global backend change)."""
    import matplotlib  # noqa: F401  (explicit, so a missing package fails here)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def make(**kw: Any) -> Any:
        fig = Figure(**kw)
        FigureCanvasAgg(fig)
        return fig

    return make


def _shade(ax: Any, windows: list[tuple[float, float]]) -> None:
    """Shade property windows, keeping the data in view and showing finite bounds."""
    ax.autoscale_view()
    y0, y1 = ax.get_ylim()
    bounds = [b for w in windows for b in w if math.isfinite(b)]
    y0, y1 = min([y0, *bounds]), max([y1, *bounds])
    pad = 0.05 * ((y1 - y0) or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    for i, (lo, hi) in enumerate(windows):
        ax.axhspan(max(lo, y0), min(hi, y1), color="tab:green", alpha=0.12, lw=0, label="window" if i == 0 else None)
    ax.set_ylim(y0, y1)


_LINESTYLES = ("-", "--", ":", "-.")


def _styles(runs: list[Run]) -> list[dict[str, str]]:
    """One colour per method and one line style per run of that method (seeds), in run order."""
    methods = [str(r.summary.get("method") or r.name) for r in runs]
    colour = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(methods))}
    seen: dict[str, int] = {}
    out = []
    for m in methods:
        k = seen[m] = seen.get(m, -1) + 1
        out.append({"color": colour[m], "ls": _LINESTYLES[k % len(_LINESTYLES)]})
    return out


def _plot(runs: list[Run], out_dir: Path) -> list[tuple[str, str]]:
    """Write the PNGs; returns ``(title, file name)`` pairs."""
    make = _figure_class()
    style = _styles(runs)
    alpha = 0.2 if len(runs) <= 4 else 0.07
    plotted = [(i, r) for i, r in enumerate(runs) if len(r.curves) and "evaluations" in r.curves]
    written: list[tuple[str, str]] = []

    def save(fig: Any, ax: Any, fname: str, title: str, ylabel: str) -> None:
        ax.set_xlabel("oracle evaluations (cumulative)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)  # fixed: tight_layout costs a draw
        fig.savefig(out_dir / fname, dpi=120)
        written.append((title, fname))

    def band(ax: Any, i: int, run: Run, mean: str, std: str) -> bool:
        c = run.curves
        if mean not in c or c[mean].isna().all():
            return False
        x, y = c["evaluations"].to_numpy(float), c[mean].to_numpy(float)
        ax.plot(x, y, **style[i], marker="." if len(x) < 30 else None, label=run.label)
        if std in c:
            s = c[std].to_numpy(float)
            ax.fill_between(x, y - s, y + s, color=style[i]["color"], alpha=alpha, lw=0)
        return True

    fig = make(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    drawn = [band(ax, i, r, "reward_mean", "reward_std") for i, r in plotted]
    if any(drawn):
        save(fig, ax, "reward.png", "Mean reward per iteration (± std)", "reward")

    fig = make(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for i, r in plotted:
        if "hits" in r.curves:
            x, y = r.curves["evaluations"].to_numpy(float), r.curves["hits"].to_numpy(float)
            ax.step(x, y, where="post", **style[i], label=r.label)
    if ax.lines:
        if max(np.nanmax(line.get_ydata(), initial=0.0) for line in ax.lines) >= N_HITS / 2:
            ax.axhline(N_HITS, color="grey", ls="--", lw=0.8, label=f"{N_HITS} hits (Burden)")
        save(fig, ax, "hits.png", "Distinct hits", "distinct hit formulas")

    props = list(dict.fromkeys(p for r in runs for p in r.properties))
    for prop in props:
        fig = make(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        if not any([band(ax, i, r, f"{prop}_mean", f"{prop}_std") for i, r in plotted]):
            continue
        wins = list(dict.fromkeys(r.windows[prop] for r in runs if prop in r.windows))
        if wins:
            _shade(ax, wins)
        save(fig, ax, f"property_{_SAFE_PROP.sub('-', prop)}.png", f"{prop}: mean per iteration (± std)", prop)
    return written


# ----------------------------------------------------------------------------------- markdown


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
        plots: list[tuple[str, str]] | None = _plot(runs, out)
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
