"""Choose the physical-validity constants of ``matinvent.crystal.validity`` from MP-20 itself.

For every crystal of ``val.csv.gz`` and ``train_partial.csv.gz``: the minimum over periodic pairs
(self-images included) of d_ij / (r_cov,i + r_cov,j), and the density. Prints their quantiles,
picks f (the training crystals' 0.5 % quantile rounded down to 0.05, so ≥ 99.5 % pass) and a
density window (MP-20's range widened to clean numbers), and measures the pass rates of the
constants hard-coded in ``matinvent.crystal.validity``.

    python benchmarks/physical_validity.py [--data ../shared/data/mp_20] [--limit N]

Writes ``benchmarks/results/physical_validity.json`` and ``physical_validity.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from matinvent.crystal.validity import DENSITY_WINDOW, F_COVALENT, contact_ratio, density_gcm3, physical_validity
from matinvent.io.cdvae_csv import read_cdvae_csv

QUANTILES = (0.0, 0.001, 0.005, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 1.0)
SPLITS = ("train_partial", "val")
RESULTS = Path(__file__).parent / "results"


def measure(path: Path, limit: int | None) -> dict:
    table = read_cdvae_csv(path, limit=limit)
    ratio = np.array([contact_ratio(c)[0] for c in table.crystals])
    rho = np.array([density_gcm3(c) for c in table.crystals])
    t0 = time.time()
    checks = [physical_validity(c) for c in table.crystals]
    seconds = time.time() - t0
    failures = [(table.ids[i], table.crystals[i].formula, r) for i, (ok, r) in enumerate(checks) if not ok]
    return {
        "n": len(ratio),
        "ratio": ratio,
        "density": rho,
        "pass_rate": 1 - len(failures) / len(ratio),
        "failures": failures,
        "ms_per_crystal": 1000 * seconds / len(ratio),
    }


def choose(train_ratio: np.ndarray, all_density: np.ndarray) -> tuple[float, tuple[float, float]]:
    """f = the 0.5 % quantile of the training ratios rounded down to 0.05; density window of clean numbers."""
    f = math.floor(np.quantile(train_ratio, 0.005) / 0.05) * 0.05
    lo = math.floor(all_density.min() / 2 / 0.05) * 0.05  # half the lightest crystal (solid H2), to 0.05
    hi = math.ceil(max(all_density.max(), 22.6) * 1.1 / 5) * 5  # 10 % above the densest (or Os), to 5
    return round(f, 2), (round(lo, 2), float(hi))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).parents[1] / ".." / "shared" / "data" / "mp_20"))
    p.add_argument("--limit", type=int, help="first rows of each CSV only (a quick look)")
    args = p.parse_args()
    res = {s: measure(Path(args.data) / f"{s}.csv.gz", args.limit) for s in SPLITS}
    f, window = choose(res["train_partial"]["ratio"], np.concatenate([r["density"] for r in res.values()]))

    print(f"{'quantile':>9}  " + "  ".join(f"{s + ' ratio':>19}  {s + ' density':>21}" for s in SPLITS))
    for q in QUANTILES:
        cells = [f"{np.quantile(res[s]['ratio'], q):19.3f}  {np.quantile(res[s]['density'], q):21.2f}" for s in SPLITS]
        print(f"{q:9.3f}  " + "  ".join(cells))
    record: dict = {
        "chosen": {"f": f, "density_window": window},
        "in_matinvent_validity": {"F_COVALENT": F_COVALENT, "DENSITY_WINDOW": list(DENSITY_WINDOW)},
        "splits": {},
    }
    for s, r in res.items():
        rate_f = float(np.mean(r["ratio"] >= f))
        rate_rho = float(np.mean((r["density"] >= window[0]) & (r["density"] <= window[1])))
        record["splits"][s] = {
            "n": r["n"],
            "quantiles_ratio": {str(q): float(np.quantile(r["ratio"], q)) for q in QUANTILES},
            "quantiles_density": {str(q): float(np.quantile(r["density"], q)) for q in QUANTILES},
            "pass_rate_chosen_f": rate_f,
            "pass_rate_chosen_density": rate_rho,
            "pass_rate_physical_validity": r["pass_rate"],
            "n_failed": len(r["failures"]),
            "failures": [{"id": i, "formula": fo, "reason": why} for i, fo, why in r["failures"][:50]],
            "ms_per_crystal": r["ms_per_crystal"],
        }
        print(
            f"{s}: n={r['n']}, pass f={f:g}: {100 * rate_f:.2f} %, density in {window}: {100 * rate_rho:.2f} %, "
            f"physical_validity (matinvent.crystal.validity constants): {100 * r['pass_rate']:.2f} % "
            f"({len(r['failures'])} fail), {r['ms_per_crystal']:.2f} ms per check"
        )
    for i, fo, why in res["val"]["failures"][:10]:
        print(f"  val fails: {i} {fo}: {why}")
    if (f, window) != (F_COVALENT, tuple(DENSITY_WINDOW)):
        print(
            f"note: matinvent.crystal.validity holds f={F_COVALENT}, window={DENSITY_WINDOW}; chosen here {f}, {window}"
        )
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.limit is None else f"_limit{args.limit}"
    out = RESULTS / f"physical_validity{suffix}.json"
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    print(f"wrote {out}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for s in SPLITS:
        axes[0].hist(res[s]["ratio"], bins=120, range=(0, 1.6), histtype="step", label=s, density=True)
        axes[1].hist(res[s]["density"], bins=120, range=(0, 30), histtype="step", label=s, density=True)
    axes[0].axvline(F_COVALENT, color="k", ls="--", label=f"f = {F_COVALENT}")
    for x in DENSITY_WINDOW:
        axes[1].axvline(x, color="k", ls="--")
    axes[0].set(xlabel="min over pairs of d_ij / (r_cov,i + r_cov,j)", ylabel="crystals (density)", yscale="log")
    axes[1].set(xlabel="density (g/cm³)", yscale="log", title=f"window {DENSITY_WINDOW}")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"physical_validity{suffix}.png", dpi=120)
    print(f"wrote {RESULTS / f'physical_validity{suffix}.png'}")


if __name__ == "__main__":
    main()
