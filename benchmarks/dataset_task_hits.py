"""How many MP-20 crystals are hits of each task under our own oracles (is T2–T4 reachable at all?).

    python benchmarks/dataset_task_hits.py                 # the 9,047 MP-20 validation crystals
    python benchmarks/dataset_task_hits.py --n 500 --name dataset_task_hits_small

The frozen prior finds no T2 or T4 hit in 3,506 evaluations (``prior_hit_rates.md``). This scores
real, DFT-relaxed MP-20 crystals with the same oracles the RL loop uses (CGCNN for gap, E_form,
K, G; pymatgen for density and HHI), without a validity gate, and counts each task's distinct hit
formulas, listing them for the multi-property tasks: how rare the joint windows are in known
chemistry, and which compositions an agent would have to find. Writes
``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_hit_rates import TASKS, provenance, score_properties, task_row, write_result  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp_20" / "val.csv.gz"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="CDVAE-layout CSV (gzip allowed)")
    ap.add_argument("--n", type=int, default=None, help="first N rows only (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="dataset_task_hits")
    args = ap.parse_args(argv)

    import torch

    from matinvent.io.cdvae_csv import read_cdvae_csv
    from matinvent.rl.trainer import formula_of
    from matinvent.scoring.tasks import load_task

    torch.set_num_threads(args.threads)
    table = read_cdvae_csv(args.data, limit=args.n)
    pool = list(table.crystals)
    formulas = [formula_of(c) for c in pool]
    print(f"{len(pool)} crystals read from {args.data}", flush=True)
    t0 = time.perf_counter()
    values = score_properties(pool)
    t_score = time.perf_counter() - t0

    rows = []
    for name in TASKS:
        task = load_task(name)
        row = task_row(task, values, formulas, budget=600)
        if len(task.properties) > 1:  # task_row counts; the formulas and near misses need the per-crystal arrays
            reward, hit, _ = task.rewards({p: values[p] for p in task.properties})
            row["hit_formulas"] = sorted({f for f, h in zip(formulas, hit, strict=True) if h})
            near = [i for i in np.argsort(-reward, kind="stable") if not hit[i]][:5]
            row["nearest_misses"] = [
                {"formula": formulas[i], "reward": float(reward[i])} | {p: float(values[p][i]) for p in task.properties}
                for i in near
            ]
        rows.append(row)
    result = {
        "data": str(args.data),
        "n": len(pool),
        "seconds_score": t_score,
        **provenance("dataset_task_hits.py", args.threads, argv),
        "rows": rows,
    }
    lines = [
        f"{len(pool)} MP-20 crystals from `{args.data.name}`, scored by the RL oracles (no validity gate); "
        f"{result['machine']}; scoring {t_score:.0f} s. Command: `{result['command']}`.",
        "",
        "| task | window | crystals | distinct hits | crystals per hit | hit formulas (multi-property tasks) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        names = r.get("hit_formulas")
        shown = "–" if names is None else (", ".join(names[:12]) + (" …" if len(names) > 12 else "") or "none")
        lines.append(
            f"| {r['task']} | {r['window']} | {r['evaluations']} | {r['distinct_hits']} | "
            f"{r['evals_per_hit']:.1f} | {shown} |"
        )
    lines += ["", "Nearest misses (highest reward without a hit):", ""]
    for r in rows:
        for m in r.get("nearest_misses", []):
            vals = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if k not in ("formula", "reward"))
            lines.append(f"- {r['task']}: {m['formula']} (reward {m['reward']:.3f}; {vals})")
    text = "\n".join(lines) + "\n"
    write_result(args.name, result, text)
    print(text)


if __name__ == "__main__":
    main()
