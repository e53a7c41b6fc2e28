"""One method across result sets of ``rl_tasks.py``: docs/benchmarks.md's side-by-side table, by one command.

    python benchmarks/rl_compare.py --sets "default=benchmarks/results/rl_tasks.json" \\
        "2 epochs=benchmarks/results/rl_tasks_epochs2.json" --method matinvent --other weighted-denoising \\
        --name rl_compare

Per task: ``method``'s ratio to the frozen prior's evaluations per hit (large sample) in every set, the
``other`` method's ratio (first set), then for the first set the diversity ratio, distinct hits per seed
and the re-checked hits, and evaluations per *surviving* hit in every set, ``other`` and the prior.
A row the first set kept from an earlier set (``kept_from``) is marked † (‡, … for further origins).
The target line counts the first set. Writes ``benchmarks/results/<name>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rl_tables import MARKS, kept_mark, kept_origins, target_counts
from rl_tasks import MPO, SPO

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _rows(result: dict) -> dict[tuple[str, str], dict]:
    return {(r["task"], r["method"]): r for r in result["rows"]}


def fmt_ratio(row: dict | None) -> str:
    if row is None or row.get("ratio_large") is None:
        return "–"
    return ("< " if row["ratio_large_is_bound"] else "") + f"{row['ratio_large']:.2f}"


def fmt_surviving(row: dict | None) -> str:
    if row is None or row.get("evals_per_surviving_hit") is None:
        return "–"
    e = row["evals_per_surviving_hit"]
    return "none" if not math.isfinite(e) else f"{e:.0f}"


def fmt_recheck(row: dict) -> str:
    if not row.get("recheck_runs"):
        return "–"
    return f"{row['recheck_still_hit']} / {row['recheck_survive']} of {row['recheck_checked']}"


def compare(sets: list[tuple[str, dict]], method: str, other: str | None) -> str:
    """Markdown table of ``method`` in every set (the first set leading), ``other`` and the prior."""
    (first_label, first), *_ = sets
    tables = [(label, _rows(res)) for label, res in sets]
    head = [f"`{method}` ({label})" for label, _ in sets]
    head += [f"`{other}`"] if other else []
    head += [f"diversity ratio ({first_label})", "distinct hits per seed", "re-checked: still hit / survive"]
    surv = " / ".join([label for label, _ in sets] + ([other] if other else []) + ["prior"])
    head.append(f"evaluations per *surviving* hit: {surv}")
    lines = ["| task | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    any_kept = False
    for task in SPO + MPO:
        lead = tables[0][1].get((task, method))
        if lead is None:
            continue
        mark = kept_mark(first, lead)
        any_kept = any_kept or bool(mark)
        cells = [fmt_ratio(lead) + mark] + [fmt_ratio(t.get((task, method))) for _, t in tables[1:]]
        oth = tables[0][1].get((task, other)) if other else None
        cells += [fmt_ratio(oth)] if other else []
        cells += [f"{lead['diversity_ratio_mean']:.2f}{mark}", f"{lead['hits']}{mark}", fmt_recheck(lead) + mark]
        per = [fmt_surviving(lead) + mark] + [fmt_surviving(t.get((task, method))) for _, t in tables[1:]]
        per += [fmt_surviving(oth)] if other else []
        per.append(fmt_surviving(tables[0][1].get((task, "prior"))))
        cells.append(" / ".join(per))
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    mi, n_mi = target_counts(first["rows"], method, 0.25, 0.9)
    mi2, n_mi2 = target_counts(first["rows"], method, 0.2)
    lines += [
        "",
        f"{first_label}: `{method}` ≤ 0.25× with diversity ratio ≥ 0.9 on {mi} of {n_mi} tasks with a ratio; "
        f"≤ 0.2× on {mi2} of {n_mi2}.",
    ]
    if any_kept:
        lines += [
            f"{mark} = row kept from {origin or 'an earlier set'}, not re-run."
            for mark, origin in zip(MARKS, kept_origins(first), strict=False)
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", required=True, help="LABEL=result JSON of rl_tasks.py; the first leads")
    ap.add_argument("--method", default="matinvent")
    ap.add_argument("--other", default="weighted-denoising", help="a second method from the first set ('' = none)")
    ap.add_argument("--name", default=None, help="stem of benchmarks/results/<name>.{md,json} (default: print only)")
    args = ap.parse_args()
    sets, paths = [], {}
    for item in args.sets:
        label, sep, path = item.partition("=")
        if not sep or not label:
            ap.error(f"--sets wants LABEL=PATH, got {item!r}")
        try:
            sets.append((label, json.loads(Path(path).read_text())))
            paths[label] = path
        except (OSError, json.JSONDecodeError) as exc:
            ap.error(f"{path}: cannot read a result JSON ({exc})")
    md = compare(sets, args.method, args.other or None)
    print(md)
    if args.name:
        (RESULTS / f"{args.name}.md").write_text(md)
        (RESULTS / f"{args.name}.json").write_text(
            json.dumps(
                {
                    "sets": paths,
                    "method": args.method,
                    "other": args.other,
                    "table": md,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
