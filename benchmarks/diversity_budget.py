"""Diversity ratio at 600 and at 3,000 evaluations (issue 33 item 5): the paper reads it at 3,000.

    python benchmarks/diversity_budget.py                 # density, band_gap × seeds 0 1 2, matinvent, budget 3000
    python benchmarks/diversity_budget.py --table-only    # the table from the run folders so far

Runs are ``benchmarks/rl_tasks.py`` runs (raw pipeline, ``configs/rl_benchmark.yaml``, 1 torch thread, one at a
time) in ``benchmarks/diversity_runs/``; resumable. From each run's memory (evaluation order) the table reads,
at b = 600 and b = 3,000 evaluations: distinct valid compositions / b (the Diversity ratio; ``unique_by:
formula``, as the paper), distinct hits and evaluations per hit. A run that has not reached b leaves the cell
empty. Writes ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from result_files import stamp, write

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (600, 3000)


def at_budgets(run: Path, budgets=BUDGETS) -> dict[int, dict[str, float]]:
    """Per budget b the run reached: diversity ratio, distinct hits and evaluations per hit after b evaluations."""
    from matinvent.io.run_memory import read_memory

    rows = read_memory(run).sort_values(["iteration", "idx"])
    ev = rows[rows["valid"].astype(bool)].reset_index(drop=True)
    out = {}
    for b in budgets:
        if len(ev) < b:
            continue
        first = ev.iloc[:b]
        hits = first.loc[first["hit"].astype(bool), "formula"].nunique()
        out[b] = {
            "diversity_ratio": first["formula"].nunique() / b,
            "hits": int(hits),
            "evals_per_hit": b / hits if hits else None,
        }
    return out


def table(runs: Path, tasks: list[str], seeds: list[int]) -> dict:
    rows = []
    for task in tasks:
        for seed in seeds:
            run = runs / f"{task}_matinvent_s{seed}"
            if (run / "memory.sqlite").is_file():
                rows.append({"task": task, "seed": seed, "at": at_budgets(run)})
    return {"rows": rows}


def markdown(result: dict) -> str:
    lines = [
        f"# Diversity ratio at 600 and 3,000 evaluations ({result['date']})",
        "",
        f"`{result['command']}` on {result['machine']}; matinvent, raw pipeline (`configs/rl_benchmark.yaml`), "
        "uniqueness by reduced formula (as the paper). Each cell: diversity ratio / distinct hits / evaluations "
        "per hit after b evaluations of the same run.",
        "",
        "| task | seed | b = 600 | b = 3,000 |",
        "|---|---|---|---|",
    ]

    def cell(x):
        if x is None:
            return "—"
        eph = f"{x['evals_per_hit']:.1f}" if x["evals_per_hit"] else "n/a"
        return f"{x['diversity_ratio']:.3f} / {x['hits']} / {eph}"

    for r in result["rows"]:
        at = {int(k): v for k, v in r["at"].items()}
        lines.append(f"| {r['task']} | {r['seed']} | {cell(at.get(600))} | {cell(at.get(3000))} |")
    for task in sorted({r["task"] for r in result["rows"]}):
        means = []
        for b in BUDGETS:
            vals = [r["at"][b]["diversity_ratio"] for r in result["rows"] if r["task"] == task and b in r["at"]]
            means.append(f"{sum(vals) / len(vals):.3f} ({len(vals)} seeds)" if vals else "—")
        lines.append(f"| **{task}, mean** | | {means[0]} | {means[1]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["density", "band_gap"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "diversity_runs")
    ap.add_argument("--name", default="diversity_budget")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        for task in args.tasks:
            for seed in args.seeds:
                cmd = [
                    sys.executable, str(ROOT / "benchmarks" / "rl_tasks.py"), "--tasks", task, "--methods", "matinvent",
                    "--seeds", str(seed), "--budget", "3000", "--jobs", "1", "--no-curves", "--runs", str(args.runs),
                    "--name", f"{args.name}_runs",
                ]  # fmt: skip
                subprocess.run(cmd, check=True)
    result = {**stamp(), **table(args.runs, args.tasks, args.seeds)}
    write(args.name, result, markdown(result))


if __name__ == "__main__":
    main()
