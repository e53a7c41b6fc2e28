"""How many oracle calls went to compositions the diversity filter had already saturated?

    python benchmarks/saturated_evaluations.py runs/tune/df1_3 runs/tune/df0_2 --name saturated_tune_df

A crystal whose reduced formula had been evaluated ``Buff`` times before gets filtered reward 0 whatever
the oracle says, so its evaluation teaches the agent nothing (its raw reward only enters the replay
buffer, which drops saturated formulas at once). Per finished run folder (``memory.sqlite``, rows in
evaluation order, ``Buff`` from ``run.json``), this counts those evaluations, the distinct hits found
*only* by them (a polymorph of a saturated formula that hit where earlier ones did not), and the run's
evaluations per hit and diversity ratio had they not been made. Exact for the same sampled crystals:
it re-counts, it does not re-run.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def saturated_counts(rows: list[tuple[str, bool]], buff: int) -> dict:
    """``rows`` = (formula, hit) of the evaluated crystals in order; counts with and without the saturated ones."""
    occ: Counter[str] = Counter()
    hits_all, hits_kept, formulas_kept = set(), set(), set()
    saturated = 0
    for formula, hit in rows:
        skip = occ[formula] >= buff
        occ[formula] += 1
        if hit:
            hits_all.add(formula)
        if skip:
            saturated += 1
            continue
        formulas_kept.add(formula)
        if hit:
            hits_kept.add(formula)
    n, kept = len(rows), len(rows) - saturated
    return {
        "evaluations": n,
        "saturated": saturated,
        "hits": len(hits_all),
        "hits_only_from_saturated": len(hits_all - hits_kept),
        "diversity_ratio": len(occ) / n if n else math.nan,
        "diversity_ratio_without": len(formulas_kept) / kept if kept else math.nan,
        "evals_per_hit": n / len(hits_all) if hits_all else math.inf,
        "evals_per_hit_without": kept / len(hits_kept) if hits_kept else math.inf,
    }


def run_counts(run: Path) -> dict:
    buff = int(json.loads((run / "run.json").read_text())["config"]["df_buff"])
    con = sqlite3.connect(f"file:{run / 'memory.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT formula, hit FROM crystals WHERE valid = 1 ORDER BY iteration, idx").fetchall()
    finally:
        con.close()
    return {"run": str(run), "buff": buff, **saturated_counts([(f, bool(h)) for f, h in rows], buff)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders, or folders of run folders")
    ap.add_argument("--name", default=None, help="write benchmarks/results/<name>.{md,json}")
    args = ap.parse_args()
    folders = []
    for p in args.runs:
        folders += [p] if (p / "run.json").exists() else sorted(q.parent for q in p.glob("*/summary.json"))
    if not folders:
        ap.error(f"no finished run folder (with summary.json) under {', '.join(map(str, args.runs))}")
    out = [run_counts(f) for f in folders]
    lines = [
        "| run | Buff | evaluations | saturated | hits | hits only from saturated | evals / hit → without "
        "| diversity ratio → without |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out:
        lines.append(
            f"| {Path(r['run']).parent.name}/{Path(r['run']).name} | {r['buff']} | {r['evaluations']} | "
            f"{r['saturated']} | {r['hits']} | {r['hits_only_from_saturated']} | "
            f"{r['evals_per_hit']:.1f} → {r['evals_per_hit_without']:.1f} | "
            f"{r['diversity_ratio']:.3f} → {r['diversity_ratio_without']:.3f} |"
        )
    md = "\n".join(lines) + "\n"
    print(md)
    if args.name:
        (RESULTS / f"{args.name}.md").write_text(md)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
