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
from pathlib import Path

from matinvent.io.run_memory import read_memory
from matinvent.rl.diversity import DiversityFilter
from matinvent.rl.metrics import RunningMetrics

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def saturated_counts(rows: list[tuple[str, bool]], buff: int, tol: int = 0) -> dict:
    """``rows`` = (formula, hit) of the evaluated crystals in order; counts with and without the crystals the
    diversity filter zeroes (Occ ≥ Buff; Tol only shapes the decay before that)."""
    dfilter = DiversityFilter(tol, buff)
    every, kept = RunningMetrics(), RunningMetrics()
    for formula, hit in rows:
        every.add(True, formula, hit)
        if dfilter([formula], [1.0])[0] > 0:
            kept.add(True, formula, hit)
    return {
        "evaluations": every.evaluations,
        "saturated": every.evaluations - kept.evaluations,
        "hits": every.hits,
        "hits_only_from_saturated": len(every.hit_formulas - kept.hit_formulas),
        "diversity_ratio": every.diversity_ratio,
        "diversity_ratio_without": kept.diversity_ratio,
        "evals_per_hit": every.evals_per_hit,
        "evals_per_hit_without": kept.evals_per_hit,
    }


def run_counts(run: Path) -> dict:
    cfg = json.loads((run / "run.json").read_text())["config"]
    tol, buff = int(cfg["df_tol"]), int(cfg["df_buff"])
    mem = read_memory(run).sort_values(["iteration", "idx"])
    rows = [(f, bool(h)) for f, h in mem.loc[mem["valid"] == 1, ["formula", "hit"]].itertuples(index=False)]
    return {"run": str(run), "buff": buff, **saturated_counts(rows, buff, tol)}


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
