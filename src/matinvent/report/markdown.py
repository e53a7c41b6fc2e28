"""Report of one or several ``matinvent optimize`` runs: curves (PNG), a metrics table, top candidates.

``write_report(run_dirs, out_dir)`` reads each RUN_DIR (``memory.sqlite``, ``metrics.csv``,
``summary.json``) and writes into ``out_dir``:

- ``reward.png``, ``hits.png`` and one ``property_<name>.png`` per property, all against cumulative
  evaluations, the runs overlaid (needs matplotlib, ``pip install matinvent[plot]``; without it the
  plots are skipped with one warning);
- ``candidates/<run>_<rank>_<formula>.cif``: the top candidates of each run;
- ``report.md``: the metrics table, the plots and the top-candidate tables.

Which run folders are reportable, and what is read from them: :mod:`matinvent.report.runs`.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from matinvent.report.plots import plot_runs
from matinvent.report.runs import (
    CANDIDATES,
    METRICS_HEADER,
    METRICS_LEGEND,
    Run,
    default_out_dir,
    fmt_value,
    load_run,
    load_runs,
    metrics_row,
    target_windows,
    top_candidates,
    write_candidate_cifs,
)

__all__ = ["Run", "load_run", "load_runs", "target_windows", "top_candidates", "write_report"]


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _candidate_section(run: Run, cands: pd.DataFrame, cifs: list[str | None]) -> list[str]:
    s = run.summary
    head = f"### {run.name}: {s.get('task') or '?'}, {run.label}" + (" (in progress)" if run.in_progress else "")
    if not len(cands):
        return [head, "", "No valid crystal yet.", ""]
    n_hits = int((cands["hit"] == 1).sum())
    note = f"{n_hits} distinct hit formula(s) shown first (best reward first), then the best non-hit valid crystals."
    relaxed = "relaxed_cif" in cands.columns and cands["relaxed_cif"].notna().any()
    extra = ["E_hull (eV/atom)", "energy drop (eV/atom)", "RMSD (Å)"] if relaxed else []
    header = ["rank", "formula", "hit", *run.properties, *extra, "reward", "iteration", "CIF"]
    header += ["relaxed CIF"] if relaxed else []
    if relaxed:
        note += " Properties and E_hull refer to the loop's relaxed structure."
    rows = []
    for rank, (row, cif) in enumerate(zip(cands.to_dict("records"), cifs, strict=True), start=1):
        props = [fmt_value(row.get(p), ".4g") for p in run.properties]
        link = f"[{cif}]({CANDIDATES}/{cif})" if cif else "-"
        hit = "yes" if row["hit"] == 1 else ""
        cells = [rank, row["formula"], hit, *props]
        if relaxed:
            cells += [fmt_value(row.get(k), ".3f") for k in ("relax_e_hull", "relax_energy_drop", "relax_rmsd")]
        cells += [fmt_value(row["reward"], ".3f"), int(row["iteration"]), link]
        if relaxed:
            name = cif.replace(".cif", "_relaxed.cif") if cif else None
            has = isinstance(row.get("relaxed_cif"), str)
            cells.append(f"[{name}]({CANDIDATES}/{name})" if name and has else "-")
        rows.append(cells)
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
    lines += _table(list(METRICS_HEADER), [metrics_row(r) for r in runs])
    lines += [
        "",
        METRICS_LEGEND,
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
                fmt_value(rc.get("frac_still_hit"), ".2f"),
                fmt_value(rc.get("frac_still_hit_mlip"), ".2f"),
                fmt_value(rc.get("median_e_above_hull"), ".3f"),
                fmt_value(rc.get("frac_e_hull_le_0.1"), ".2f"),
                fmt_value(rc.get("frac_survive"), ".2f"),
                fmt_value(s.get("evals_per_hit") if (s := r.summary) else None, ".1f"),
                fmt_value(burden, ".1f") + (est if burden is not None else ""),
            ]
        )
    if not rows:
        return []
    header = ["run", "hits checked", "still hit", "still hit (MLIP)", "median E_hull", "E_hull ≤ 0.1", "survive"]
    models = sorted({str((r.summary.get("recheck") or {}).get("model") or "an MLIP") for r in runs})
    lines = ["", f"## Hits re-checked (relaxed with {', '.join(models)}, re-scored)", ""]
    lines += _table([*header, "evals/hit", "evals/surviving hit"], rows)
    lines += [
        "",
        "*still hit*: the task's oracles on the relaxed structure keep every property in its window; *MLIP*: the "
        "same with the MLIP's own E_form / moduli; *E_hull* (eV/atom) vs the shipped MP-20 hull; *survive*: still a "
        "hit and E_hull ≤ 0.1; *evals/surviving hit*: evaluations / (distinct hits × survive fraction), an estimate "
        "when only a subset was checked. Details: `recheck.json`, `recheck.csv`, relaxed CIFs in `recheck/`.",
    ]
    return lines


def write_report(run_dirs: list[Path], out_dir: Path | None = None, top: int = 10) -> Path:
    """Write ``report.md`` (+ PNG curves and candidate CIFs) for ``run_dirs``; returns the report path.

    ``out_dir`` defaults to the run's own folder for one run and to ``./report`` for several.
    Raises ``FileNotFoundError`` for a folder that is not a (finished or in-progress) run.
    """
    run_dirs = [Path(p) for p in run_dirs]
    runs = load_runs(run_dirs)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
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
        sections.append(_candidate_section(r, cands, write_candidate_cifs(r, cands, out / CANDIDATES)))
    path = out / "report.md"
    path.write_text(_markdown(runs, plots, sections))
    return path
