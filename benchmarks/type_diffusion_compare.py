"""Gaussian vs masked atom-type diffusion at equal training compute (issue #10).

Samples ``--n`` crystals (seed 0, 100 respaced steps) from each checkpoint, evaluates them with
``matinvent evaluate`` against MP-20 val, and tabulates the composition metrics. The two priors
are trained by ``matinvent pretrain`` with ``configs/compare_types_{gaussian,masked}.yaml``
(same denoiser, data, batch, steps, schedule and seed; only ``diffusion.type_diffusion`` differs).

    python benchmarks/type_diffusion_compare.py runs/compare_gaussian/checkpoint runs/compare_masked/checkpoint
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "mp_20" / "val.csv.gz"
METRICS = (
    "structure_validity", "physical_validity", "composition_validity", "uniqueness",
    "wdist_num_elements", "wdist_density", "frac_more_than_5_elements",
)  # fmt: skip


def n_elements_stats(folder: Path, reference: list[int]) -> dict:
    """#elements histogram of the CIFs in ``folder``, its W-distance to ``reference``, fraction > 5."""
    from pymatgen.core import Structure
    from scipy.stats import wasserstein_distance

    counts = []
    for f in sorted(folder.glob("*.cif")):
        try:
            counts.append(len(Structure.from_file(str(f)).composition.elements))
        except Exception:  # an unreadable sample has no composition
            continue
    hist = np.bincount(counts, minlength=16)
    return {
        "n_elements_hist": hist.tolist(),
        "median_n_elements": float(np.median(counts)),
        "frac_more_than_5_elements_all": float(np.mean(np.asarray(counts) > 5)),
        "wdist_num_elements_all": float(wasserstein_distance(counts, reference)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="prior folders (label = parent folder name)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "runs" / "type_compare"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "type_diffusion_compare.json"))
    args = ap.parse_args()
    from matinvent.io.cdvae_csv import read_cdvae_csv

    ref_counts = [len(set(c.Z.tolist())) for c in read_cdvae_csv(REFERENCE).crystals if c is not None]
    results = {}
    for ckpt in args.checkpoints:
        label = Path(ckpt).parent.name if Path(ckpt).name == "checkpoint" else Path(ckpt).name
        folder = Path(args.out) / label
        t0 = time.time()
        if not (folder / "evaluation.json").exists():
            subprocess.run(
                [sys.executable, "-m", "matinvent.cli", "sample", "--n", str(args.n), "--seed", "0", "--out",
                 str(folder), "--checkpoint", str(ckpt), "--steps", str(args.steps)], check=True,
            )  # fmt: skip
            subprocess.run(
                [sys.executable, "-m", "matinvent.cli", "evaluate", str(folder), "--reference", str(REFERENCE)],
                check=True,
            )
        ev = json.loads((folder / "evaluation.json").read_text())
        info = json.loads((Path(ckpt) / "config.json").read_text())
        results[label] = {
            "checkpoint": str(ckpt),
            "type_diffusion": info["diffusion"].get("type_diffusion", "gaussian"),
            "train_steps": info.get("info", {}).get("steps"),
            "val_loss": info.get("info", {}).get("val_loss"),
            "evaluation": ev,
            **n_elements_stats(folder, ref_counts),
            "seconds": time.time() - t0,
        }
    ref_hist = np.bincount(ref_counts, minlength=16)
    out = {"n": args.n, "steps": args.steps, "reference": str(REFERENCE), "reference_hist": ref_hist.tolist(),
           "results": results}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    labels = list(results)
    print(f"{'metric':<32}" + "".join(f"{lab:>20}" for lab in labels))
    for key in (*METRICS, "median_n_elements", "frac_more_than_5_elements_all", "wdist_num_elements_all"):
        vals = [results[lab]["evaluation"].get(key, results[lab].get(key)) for lab in labels]
        print(f"{key:<32}" + "".join(f"{v:>20.4f}" if isinstance(v, float) else f"{v!s:>20}" for v in vals))
    print(f"{'reference #elements hist':<32}{ref_hist[:9].tolist()}")
    for lab in labels:
        print(f"{lab + ' #elements hist':<32}{results[lab]['n_elements_hist'][:9]}")


if __name__ == "__main__":
    main()
