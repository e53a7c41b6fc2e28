"""A self-contained, offline ``report.html`` of one or several ``matinvent optimize`` runs (plotly).

``write_html_report(run_dirs, out_dir)`` reads the run folders as :mod:`matinvent.report.runs` does
and writes into ``out_dir``:

- ``report.html``: the metrics table (the cells of ``report.md``), the reward / hit / property curves
  against cumulative evaluations (units on the axes, ± std bands clipped to each quantity's physical
  range, property windows shaded), and per run its top candidates: formula, space group
  (``SpacegroupAnalyzer`` at ``symprec``), the task's properties with units, E_hull where the loop's
  relaxation, the run's memory (an ``e_above_hull`` property) or its ``recheck.csv`` has it, for a relaxed
  run the energy drop and RMSD of the relaxation, reward, links to the CIFs, and an interactive 3-D view
  of each unit cell (:mod:`matinvent.report.structure_view`; the relaxed cell when the loop relaxed);
- ``candidates/<run>_<rank>_<formula>.cif`` (P1, as generated), ``…_relaxed.cif`` (the loop's relaxed
  structure, relaxed runs) and ``…_sym.cif`` (symmetrised with ``CifWriter(symprec=…)``, of the relaxed
  structure where there is one; when symmetry detection fails only the P1 one, with a note).

The plotly.js bundle is inlined: the page loads nothing from the network. Each 3-D view is a
``div.structure-viewer`` (id ``viewer-<run index>-<rank>``) drawn when it scrolls into view; at
most ``max_live_viewers`` (default ``MAX_LIVE_VIEWERS``) are kept drawn (browsers cap the WebGL
contexts of a page, about 16); those out of view beyond that are released and drawn again when they
come back into view.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.offline import get_plotlyjs

from matinvent.crystal.record import Crystal
from matinvent.report.plots import HITS_LABEL, REWARD_LABEL, X_LABEL, axis_label, band, styles
from matinvent.report.runs import (
    CANDIDATES,
    METRICS_HEADER,
    METRICS_LEGEND,
    Run,
    default_out_dir,
    fmt_value,
    load_runs,
    metrics_row,
    top_candidates,
    write_candidate_cifs,
)
from matinvent.report.structure_view import Symmetry, structure_figure, symmetry
from matinvent.rl.metrics import N_HITS

REPORT_HTML = "report.html"
MAX_LIVE_VIEWERS = 8
E_HULL = "e_above_hull"  # eV/atom
_DASH = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}


@dataclass
class Candidate:
    """One top candidate of a run, as the page shows it."""

    rank: int
    row: dict[str, Any]
    p1_cif: str | None
    structure: Any = None  # pymatgen Structure, None when the CIF could not be read
    error: str = ""
    sym: Symmetry | None = None
    sym_cif: str | None = None
    e_hull: float | None = None
    e_hull_source: str = ""
    relaxed_cif: str | None = None  # the loop's relaxed structure (relax: mlip), written beside the P1 CIF


# ----------------------------------------------------------------------------------- candidates


def _recheck_e_hull(run: Run) -> dict[int, float]:
    """memory id → E_hull (eV/atom) of the relaxed hit, from ``recheck.csv`` (empty when absent)."""
    path = run.path / "recheck.csv"
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    if not {"id", E_HULL} <= set(table.columns):
        raise ValueError(f"{path}: needs the columns 'id' and '{E_HULL}' (not written by matinvent recheck?)")
    values = pd.to_numeric(table[E_HULL], errors="coerce")
    return {int(i): float(v) for i, v in zip(table["id"], values, strict=True) if math.isfinite(v)}


def _candidates(run: Run, top: int, cand_dir: Path, symprec: float) -> list[Candidate]:
    """The run's top candidates with structures, symmetry and E_hull; writes their P1 and symmetrised CIFs."""
    cands = top_candidates(run.memory, top)
    p1 = write_candidate_cifs(run, cands, cand_dir)
    stale = re.compile(rf"^{re.escape(run.name)}_\d+_[^_]*_sym\.cif$")
    for old in cand_dir.glob("*_sym.cif"):
        if stale.match(old.name):
            old.unlink()
    rechecked = _recheck_e_hull(run)
    out = []
    for rank, (row, cif) in enumerate(zip(cands.to_dict("records"), p1, strict=True), start=1):
        c = Candidate(rank, row, cif)
        relaxed = row.get("relaxed_cif")
        relaxed = relaxed if isinstance(relaxed, str) and relaxed.strip() else None
        if relaxed and cif is not None:
            c.relaxed_cif = cif.removesuffix(".cif") + "_relaxed.cif"  # written by write_candidate_cifs
        loop_e_hull = row.get("relax_e_hull")
        if loop_e_hull is not None and math.isfinite(float(loop_e_hull)):
            c.e_hull, c.e_hull_source = float(loop_e_hull), "loop relaxation"
        elif E_HULL in row and row[E_HULL] is not None and math.isfinite(float(row[E_HULL])):
            c.e_hull, c.e_hull_source = float(row[E_HULL]), "oracle"
        elif int(row["id"]) in rechecked:
            c.e_hull, c.e_hull_source = rechecked[int(row["id"])], "recheck (relaxed)"
        try:  # the structure the properties refer to: the relaxed one when the loop relaxed
            c.structure = Crystal.from_cif(relaxed or str(row["cif"])).to_structure()
        except Exception as exc:  # noqa: BLE001 - one unreadable record never stops the report
            c.error = f"CIF not readable ({type(exc).__name__}: {exc})"
            out.append(c)
            continue
        c.sym = symmetry(c.structure, symprec)
        if c.sym.cif is not None and cif is not None:
            c.sym_cif = cif.removesuffix(".cif") + "_sym.cif"
            (cand_dir / c.sym_cif).write_text(c.sym.cif)
        out.append(c)
    return out


# ----------------------------------------------------------------------------------- curves


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = hex_to_rgb(hex_colour)
    return f"rgba({r},{g},{b},{alpha})"


def _layout(fig: go.Figure, title: str, ylabel: str) -> go.Figure:
    fig.update_layout(
        template="simple_white", title={"text": title, "font": {"size": 15}}, height=380,
        margin={"l": 70, "r": 20, "t": 50, "b": 55}, legend={"font": {"size": 11}},
        xaxis={"title": {"text": X_LABEL}, "showgrid": True}, yaxis={"title": {"text": ylabel}, "showgrid": True},
    )  # fmt: skip
    return fig


def curve_figures(runs: list[Run]) -> list[tuple[str, go.Figure]]:
    """``(id, figure)`` of the reward, hits and per-property curves that have data."""
    style = [
        {"color": qualitative.D3[int(s["color"][1:]) % 10], "dash": _DASH[s["ls"]]} for s in styles(runs)
    ]  # matplotlib's "C<i>" cycle is D3's
    plotted = [(i, r) for i, r in enumerate(runs) if len(r.curves) and "evaluations" in r.curves]

    def mean_band(fig: go.Figure, i: int, run: Run, name: str) -> bool:
        c, mean, std = run.curves, f"{name}_mean", f"{name}_std"
        if mean not in c or c[mean].isna().all():
            return False
        x, y = c["evaluations"].to_numpy(float), c[mean].to_numpy(float)
        if std in c:
            lo, hi = band(name, y, c[std].to_numpy(float))
            ok = np.isfinite(lo) & np.isfinite(hi)
            fig.add_trace(
                go.Scatter(
                    x=np.r_[x[ok], x[ok][::-1]], y=np.r_[hi[ok], lo[ok][::-1]], fill="toself", mode="lines",
                    line={"width": 0}, fillcolor=_rgba(style[i]["color"], 0.18), hoverinfo="skip",
                    legendgroup=run.label, showlegend=False, name=f"{run.label} ± std",
                )
            )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=x, y=y, mode="lines+markers" if len(x) < 30 else "lines", name=run.label, line=style[i],
                       legendgroup=run.label, marker={"size": 5})
        )  # fmt: skip
        return True

    out = []
    fig = go.Figure()
    if any([mean_band(fig, i, r, "reward") for i, r in plotted]):
        out.append(("curve-reward", _layout(fig, "Mean reward per iteration (± std)", REWARD_LABEL)))
    fig = go.Figure()
    for i, r in plotted:
        if "hits" in r.curves:
            fig.add_trace(go.Scatter(x=r.curves["evaluations"], y=r.curves["hits"], mode="lines", name=r.label,
                                     line={**style[i], "shape": "hv"}))  # fmt: skip
    if fig.data:
        if max(np.nanmax(np.asarray(t.y, float), initial=0.0) for t in fig.data) >= N_HITS / 2:
            fig.add_hline(y=N_HITS, line={"color": "grey", "dash": "dash", "width": 1},
                          annotation_text=f"{N_HITS} hits (Burden)")  # fmt: skip
        fig = _layout(fig, "Distinct hits", HITS_LABEL)
        fig.update_yaxes(rangemode="nonnegative")  # a count: no negative axis, even with 0 hits
        out.append(("curve-hits", fig))
    for k, prop in enumerate(dict.fromkeys(p for r in runs for p in r.properties)):
        fig = go.Figure()
        if not any([mean_band(fig, i, r, prop) for i, r in plotted]):
            continue
        ys = np.concatenate([np.asarray(t.y, float) for t in fig.data])
        y0, y1 = float(np.nanmin(ys)), float(np.nanmax(ys))
        for lo, hi in dict.fromkeys(r.windows[prop] for r in runs if prop in r.windows):
            pad = 0.1 * ((max(y1, hi if math.isfinite(hi) else y1) - min(y0, lo if math.isfinite(lo) else y0)) or 1)
            fig.add_hrect(y0=lo if math.isfinite(lo) else min(y0, hi) - pad,
                          y1=hi if math.isfinite(hi) else max(y1, lo) + pad,
                          fillcolor="green", opacity=0.1, line_width=0)  # fmt: skip
        unit = next((r.units[prop] for r in runs if r.units.get(prop)), "")
        out.append((f"curve-prop-{k}", _layout(fig, f"{prop}: mean per iteration (± std)", axis_label(prop, unit))))
    return out


# ----------------------------------------------------------------------------------- page

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
table{border-collapse:collapse;margin:8px 0 4px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:12px;max-width:1100px}
.curves{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:8px}
.viewers{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:6px}.card h4{margin:2px 4px 4px;font-size:13px}
.structure-viewer{height:320px}.structure-plot{height:100%}.hit{color:#080;font-weight:600}
"""

_JS = """
(function () {
  var CONFIG = {displaylogo: false, responsive: true};
  function draw(el) {
    var f = JSON.parse(document.getElementById(el.dataset.figure).textContent);
    return Plotly.newPlot(el, f.data, f.layout, CONFIG);
  }
  document.querySelectorAll(".curve-plot").forEach(draw);
  var live = [], visible = new Set();
  function release(box) {
    var plot = box.querySelector(".structure-plot"), canvases = Array.from(plot.querySelectorAll("canvas"));
    Plotly.purge(plot);
    canvases.forEach(function (c) {
      var gl = c.getContext("webgl2") || c.getContext("webgl"), ext = gl && gl.getExtension("WEBGL_lose_context");
      if (ext) { ext.loseContext(); }
    });
    var fresh = document.createElement("div");
    fresh.className = "structure-plot";
    fresh.dataset.figure = plot.dataset.figure;
    plot.replaceWith(fresh);
  }
  function show(box) {
    if (live.indexOf(box) >= 0) { return; }
    draw(box.querySelector(".structure-plot"));
    box.dataset.rendered = "1";
    live.push(box);
    for (var i = 0; live.length > MAX_LIVE && i < live.length;) {
      if (visible.has(live[i])) { i++; } else { release(live.splice(i, 1)[0]); }
    }
  }
  var observer = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) { (e.isIntersecting ? visible.add : visible.delete).call(visible, e.target); });
    entries.forEach(function (e) { if (e.isIntersecting) { show(e.target); } });
  }, {rootMargin: "100px"});
  document.querySelectorAll(".structure-viewer").forEach(function (b) { observer.observe(b); });
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are already escaped HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_json(fig_id: str, fig: go.Figure) -> str:
    payload = fig.to_json().replace("</", "<\\/")  # never closes the script element early
    return f'<script type="application/json" id="{fig_id}">{payload}</script>'


def _link(name: str | None, text: str) -> str:
    return f'<a href="{CANDIDATES}/{quote(name)}">{_e(text)}</a>' if name else "-"


def _candidate_html(index: int, run: Run, cands: list[Candidate]) -> str:
    s = run.summary
    head = f"<h3>{_e(run.name)}: {_e(s.get('task') or '?')}, {_e(run.label)}"
    head += " (in progress)</h3>" if run.in_progress else "</h3>"
    if not cands:
        return head + "<p>No valid crystal yet.</p>"
    n_hits = sum(c.row.get("hit") == 1 for c in cands)
    props = [axis_label(p, run.units.get(p, "")) for p in run.properties]
    relaxing = any(c.relaxed_cif for c in cands)
    extra = ["energy drop (eV/atom)", "RMSD (Å)"] if relaxing else []
    header = ["rank", "formula", "hit", "space group", *props, "E_hull (eV/atom)", *extra, "reward", "iteration", "CIF"]
    rows, cards = [], []
    for c in cands:
        e_hull = fmt_value(c.e_hull, ".3f", none="-")
        if c.e_hull_source:
            e_hull += f' <span class="note">({_e(c.e_hull_source)})</span>'
        links = _link(c.p1_cif, "P1 (generated)" if relaxing else "P1")
        links += " · " + _link(c.relaxed_cif, "relaxed") if c.relaxed_cif else ""
        links += " · " + _link(c.sym_cif, "symmetrised") if c.sym_cif else ""
        moved = [_e(fmt_value(c.row.get(k), ".3f", none="-")) for k in ("relax_energy_drop", "relax_rmsd")]
        notes = "; ".join(filter(None, [c.error, c.sym.note if c.sym else ""]))
        links += f' <span class="note">{_e(notes)}</span>' if notes else ""
        sg = _e(c.sym.label if c.sym else "?")
        hit = '<span class="hit">yes</span>' if c.row.get("hit") == 1 else ""
        values = [_e(fmt_value(c.row.get(p), ".4g")) for p in run.properties]
        rows.append([str(c.rank), _e(c.row["formula"]), hit, sg, *values, e_hull, *(moved if relaxing else []),
                     _e(fmt_value(c.row["reward"], ".3f")), str(int(c.row["iteration"])), links])  # fmt: skip
        if c.structure is None:
            continue
        vid = f"viewer-{index}-{c.rank}"
        fig = structure_figure(c.structure)
        cards.append(
            f'<div class="card"><h4>#{c.rank} {_e(c.row["formula"])} — {sg}{" — hit" * (c.row.get("hit") == 1)}'
            f"{' (relaxed)' * bool(c.relaxed_cif)}</h4>"
            f'<div class="structure-viewer" id="{vid}" data-run="{_e(run.name)}" data-rank="{c.rank}">'
            f'<div class="structure-plot" data-figure="{vid}-data"></div></div>{_figure_json(vid + "-data", fig)}</div>'
        )
    note = (
        f"{n_hits} distinct hit formula(s) first (best reward first), then the best non-hit valid crystals. "
        "Space groups by pymatgen's SpacegroupAnalyzer; 3-D views: one unit cell, atoms on faces/edges/corners "
        "repeated, drag to rotate."
    )
    return (
        head + f'<p class="note">{_e(note)}</p>' + _table(header, rows) + f'<div class="viewers">{"".join(cards)}</div>'
    )


def _page(runs: list[Run], curves: list[tuple[str, go.Figure]], sections: list[str], symprec: float, live: int) -> str:
    metrics = _table(list(METRICS_HEADER), [[_e(c) for c in metrics_row(r)] for r in runs])
    run_items = []
    for r in runs:
        s = r.summary
        bits = [f"<code>{_e(r.path)}</code>", f"task {_e(s.get('task') or '?')}"]
        if s.get("windows"):
            w = s["windows"]
            bits.append("windows <code>" + _e("; ".join(map(str, w)) if isinstance(w, list | tuple) else w) + "</code>")
        bits += [f"{k} {_e(s[k])}" for k in ("prior", "budget", "iterations", "samples") if s.get(k) is not None]
        status = " — in progress" if r.in_progress else ""
        run_items.append(f"<li><b>{_e(r.name)}</b> ({_e(r.label)}){status}: {', '.join(bits)}</li>")
    plots = "".join(
        f'<div class="curve-plot" id="{cid}" data-figure="{cid}-data"></div>{_figure_json(cid + "-data", fig)}'
        for cid, fig in curves
    )
    legend = METRICS_LEGEND.replace("*", "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>MatInvent optimisation report</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script></head><body>
<h1>MatInvent optimisation report</h1>
<p>{len(runs)} run(s), generated {datetime.now().strftime("%Y-%m-%d %H:%M")}; space groups at symprec {symprec:g} Å.</p>
<h2>Metrics</h2>{metrics}<p class="note">{_e(legend)}</p>
<h2>Runs</h2><ul>{"".join(run_items)}</ul>
<h2>Curves</h2>{'<div class="curves">' + plots + "</div>" if plots else "<p>No curves (no metrics.csv rows yet).</p>"}
<h2>Top candidates</h2>{"".join(sections)}
<script>var MAX_LIVE = {live};{_JS}</script>
</body></html>
"""


def write_html_report(
    run_dirs: list[Path],
    out_dir: Path | None = None,
    top: int = 10,
    symprec: float = 0.1,
    max_live_viewers: int = MAX_LIVE_VIEWERS,
) -> Path:
    """Write ``report.html`` (+ P1 and symmetrised candidate CIFs) for ``run_dirs``; returns its path.

    ``out_dir`` defaults to the run's own folder for one run and to ``./report`` for several;
    ``symprec`` (Å) is the symmetry tolerance of the space groups and symmetrised CIFs;
    ``max_live_viewers``: 3-D views kept drawn out of view (each holds a WebGL context).
    """
    if not symprec > 0:
        raise ValueError(f"symprec must be > 0 Å, got {symprec}")
    if max_live_viewers < 1:
        raise ValueError(f"max_live_viewers must be ≥ 1, got {max_live_viewers}")
    run_dirs = [Path(p) for p in run_dirs]
    runs = load_runs(run_dirs)
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    sections = [_candidate_html(i, r, _candidates(r, top, out / CANDIDATES, symprec)) for i, r in enumerate(runs)]
    path = out / REPORT_HTML
    path.write_text(_page(runs, curve_figures(runs), sections, symprec, max_live_viewers), encoding="utf-8")
    return path
