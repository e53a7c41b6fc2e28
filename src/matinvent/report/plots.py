"""The curves of a run report: reward, hits and each property against cumulative evaluations (PNG).

Needs matplotlib (``pip install matinvent[plot]``); :func:`plot_runs` raises ``ImportError`` without it.
Runs are coloured by method and dashed by seed; property windows are shaded; axes carry the units.
The ± std bands are clipped to each quantity's physical range (:func:`band`): the reward stays in
[0, 1], band gaps, densities, moduli, HHI and E_hull never go below 0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matinvent.rl.metrics import N_HITS

if TYPE_CHECKING:
    from matinvent.report.runs import Run

SAFE_PROP = re.compile(r"[^A-Za-z0-9_.-]+")  # property names in PNG file names
X_LABEL = "oracle evaluations (cumulative)"
REWARD_LABEL = "reward (dimensionless, 0–1)"
HITS_LABEL = "distinct hit formulas (count)"
# physical (low, high) of the quantities that have one; others are unbounded
RANGES: dict[str, tuple[float, float]] = {
    "reward": (0.0, 1.0),
    "band_gap": (0.0, math.inf),
    "density": (0.0, math.inf),
    "hhi": (0.0, 10000.0),
    "bulk_modulus": (0.0, math.inf),
    "shear_modulus": (0.0, math.inf),
}  # e_above_hull has no bound: a crystal below the (thinned) hull has E_hull < 0


def band(name: str, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mean - std, mean + std)`` clipped to ``name``'s physical range (``RANGES``); NaN stays NaN."""
    lo, hi = RANGES.get(name, (-math.inf, math.inf))
    mean, std = np.asarray(mean, dtype=float), np.abs(np.asarray(std, dtype=float))
    return np.clip(mean - std, lo, hi), np.clip(mean + std, lo, hi)


def axis_label(name: str, unit: str) -> str:
    """``"band_gap (eV)"``; a unitless property says so."""
    return f"{name} ({unit})" if unit else f"{name} (no unit)"


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


def styles(runs: list[Run]) -> list[dict[str, str]]:
    """One colour per method and one line style per run of that method (seeds), in run order."""
    methods = [str(r.summary.get("method") or r.name) for r in runs]
    colour = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(methods))}
    seen: dict[str, int] = {}
    out = []
    for m in methods:
        k = seen[m] = seen.get(m, -1) + 1
        out.append({"color": colour[m], "ls": _LINESTYLES[k % len(_LINESTYLES)]})
    return out


def plot_runs(runs: list[Run], out_dir: Path) -> list[tuple[str, str]]:
    """Write the PNGs; returns ``(title, file name)`` pairs."""
    make = _figure_class()
    style = styles(runs)
    alpha = 0.2 if len(runs) <= 4 else 0.07
    plotted = [(i, r) for i, r in enumerate(runs) if len(r.curves) and "evaluations" in r.curves]
    written: list[tuple[str, str]] = []

    def save(fig: Any, ax: Any, fname: str, title: str, ylabel: str) -> None:
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)  # fixed: tight_layout costs a draw
        fig.savefig(out_dir / fname, dpi=120)
        written.append((title, fname))

    def curve(ax: Any, i: int, run: Run, name: str) -> bool:
        c, mean, std = run.curves, f"{name}_mean", f"{name}_std"
        if mean not in c or c[mean].isna().all():
            return False
        x, y = c["evaluations"].to_numpy(float), c[mean].to_numpy(float)
        ax.plot(x, y, **style[i], marker="." if len(x) < 30 else None, label=run.label)
        if std in c:
            ax.fill_between(x, *band(name, y, c[std].to_numpy(float)), color=style[i]["color"], alpha=alpha, lw=0)
        return True

    fig = make(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    drawn = [curve(ax, i, r, "reward") for i, r in plotted]
    if any(drawn):
        save(fig, ax, "reward.png", "Mean reward per iteration (± std)", REWARD_LABEL)

    fig = make(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for i, r in plotted:
        if "hits" in r.curves:
            x, y = r.curves["evaluations"].to_numpy(float), r.curves["hits"].to_numpy(float)
            ax.step(x, y, where="post", **style[i], label=r.label)
    if ax.lines:
        if max(np.nanmax(line.get_ydata(), initial=0.0) for line in ax.lines) >= N_HITS / 2:
            ax.axhline(N_HITS, color="grey", ls="--", lw=0.8, label=f"{N_HITS} hits (Burden)")
        save(fig, ax, "hits.png", "Distinct hits", HITS_LABEL)

    props = list(dict.fromkeys(p for r in runs for p in r.properties))
    for prop in props:
        fig = make(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        if not any([curve(ax, i, r, prop) for i, r in plotted]):
            continue
        wins = list(dict.fromkeys(r.windows[prop] for r in runs if prop in r.windows))
        if wins:
            _shade(ax, wins)
        unit = next((r.units[prop] for r in runs if r.units.get(prop)), "")
        title = f"{prop}: mean per iteration (± std)"
        save(fig, ax, f"property_{SAFE_PROP.sub('-', prop)}.png", title, axis_label(prop, unit))
    return written
