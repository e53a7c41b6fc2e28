"""Oracle speed on CPU: structures/s of each built-in oracle on MP-20 structures.

    python benchmarks/oracle_speed.py [--n 200] [--threads 2] [--mlip]

CGCNN timings include featurisation (neighbour lists) and exclude the one-off model load.
``--mlip`` also times the SevenNet-0 physics oracle (relax + formation energy, + bulk modulus,
+ shear modulus) on a handful of structures. Prints a table and writes
benchmarks/results/oracle_speed.json.
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
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "mp20_sample.csv"


def time_oracle(oracle, structures) -> dict:
    oracle(structures[:2])  # warm-up: loads weights / data tables
    t0 = time.perf_counter()
    values = oracle(structures)
    dt = time.perf_counter() - t0
    return {
        "n": len(structures),
        "seconds": round(dt, 3),
        "structures_per_s": round(len(structures) / dt, 2),
        "nan": int(np.isnan(values).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mlip", action="store_true", help="also time the SevenNet-0 oracle (slow)")
    ap.add_argument("--mlip-n", type=int, default=5)
    args = ap.parse_args()
    import torch

    from matinvent.io.cdvae_csv import read_cdvae_csv
    from matinvent.oracles import get_oracle

    torch.set_num_threads(args.threads)
    src = DATA if DATA.exists() else FIXTURE
    structures = [c.to_structure() for c in read_cdvae_csv(src, limit=args.n).crystals]
    rows = {}
    for name in ("density", "hhi", "band_gap", "formation_energy", "bulk_modulus", "shear_modulus"):
        rows[name] = time_oracle(get_oracle(name), structures)
    if args.mlip:
        from matinvent.oracles.mlip import mlip_oracles

        small = structures[1 : 1 + args.mlip_n]  # structures[0] is the warm-up (relaxations are cached)
        oracles = mlip_oracles("sevennet-0")
        oracles["formation_energy"](structures[:1])  # warm-up: model load, MP2020 tables
        for prop, what in (
            ("formation_energy", "relax + E_form"),
            ("bulk_modulus", "+ EOS"),
            ("shear_modulus", "+ elastic"),
        ):
            t0 = time.perf_counter()
            oracles[prop](small)
            dt = time.perf_counter() - t0
            rows[f"mlip {prop} ({what})"] = {
                "n": len(small),
                "seconds": round(dt, 2),
                "structures_per_s": round(len(small) / dt, 3),
            }
    print(f"{'oracle':<34} {'n':>5} {'seconds':>9} {'structures/s':>13}")
    for name, r in rows.items():
        print(f"{name:<34} {r['n']:>5} {r['seconds']:>9.2f} {r['structures_per_s']:>13.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": f"{platform.machine()} CPU, {args.threads} torch threads",
        "data": str(src.name),
        "command": "python benchmarks/oracle_speed.py" + (" --mlip" if args.mlip else ""),
        "oracles": rows,
    }
    (RESULTS / "oracle_speed.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'oracle_speed.json'}")


if __name__ == "__main__":
    main()
