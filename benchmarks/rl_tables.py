"""Tables 1–4 of ``rl_tasks.py``: per-(task, method) rows over seeds and their markdown layout.

Pure functions over finished run folders (``summary.json``, ``metrics.csv``, the ``recheck`` block),
kept apart from the runner so the tables can be rebuilt (``--table-only``) and tested alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

# The paper's Tables 1–4 (Burden mean, std; diversity ratio mean, std) for baseline (= prior),
# hill climbing, REINFORCE, MatInvent; None = "> 1000".
PAPER_BURDEN = {
    "band_gap": {"prior": (75.2, 10.6), "hill-climb": (48.7, 11.2), "reinforce": (33.2, 5.6),
                 "matinvent": (14.4, 1.3)},
    "formation_energy": {"prior": (15.7, 2.8), "hill-climb": (8.1, 3.4), "reinforce": (11.3, 4.8),
                         "matinvent": (4.3, 2.1)},
    "bulk_modulus": {"prior": (168.5, 18.7), "hill-climb": (51.9, 31.0), "reinforce": (36.7, 9.8),
                     "matinvent": (11.5, 1.5)},
    "shear_modulus": {"prior": (67.8, 9.8), "hill-climb": (12.9, 3.3), "reinforce": (27.6, 4.2),
                      "matinvent": (9.4, 1.1)},
    "density": {"prior": (39.1, 6.2), "hill-climb": (11.2, 2.4), "reinforce": (13.6, 1.8), "matinvent": (8.7, 0.9)},
    "hhi": {"prior": (38.4, 5.4), "hill-climb": (27.5, 5.7), "reinforce": (18.1, 2.3), "matinvent": (7.7, 0.8)},
    "T1": {"prior": (83.2, 11.1), "hill-climb": (41.6, 13.2), "reinforce": (43.7, 8.7), "matinvent": (15.8, 1.8)},
    "T2": {"prior": None, "hill-climb": (56.2, 23.4), "reinforce": (83.0, 12.4), "matinvent": (51.9, 6.1)},
    "T3": {"prior": None, "hill-climb": (48.9, 21.8), "reinforce": (72.6, 15.8), "matinvent": (44.1, 3.7)},
    "T4": {"prior": None, "hill-climb": (67.1, 39.7), "reinforce": (88.4, 14.1), "matinvent": (47.4, 4.2)},
}  # fmt: skip
PAPER_DIVERSITY = {
    "band_gap": (0.965, 0.767, 0.893, 0.970), "formation_energy": (0.964, 0.807, 0.871, 0.969),
    "bulk_modulus": (0.966, 0.704, 0.856, 0.961), "shear_modulus": (0.966, 0.749, 0.877, 0.965),
    "density": (0.963, 0.752, 0.821, 0.957), "hhi": (0.961, 0.761, 0.884, 0.958),
    "T1": (0.966, 0.836, 0.920, 0.959), "T2": (0.965, 0.841, 0.889, 0.947),
    "T3": (0.963, 0.811, 0.914, 0.966), "T4": (0.964, 0.897, 0.908, 0.951),
}  # fmt: skip
PAPER_DIVERSITY_ORDER = ("prior", "hill-climb", "reinforce", "matinvent")


def _ratio(evaluations: float, hits: int) -> float:
    return evaluations / hits if hits else math.inf


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not all(math.isfinite(v) for v in values):
        return math.inf, math.nan
    s = pd.Series(values, dtype=float)
    return float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else 0.0


def run_row(paths: list[Path]) -> dict | None:
    """Burden (or evaluations per hit), diversity ratio, timing and re-check numbers over seeds."""
    done = [p for p in paths if (p / "summary.json").exists()]
    if not done:
        return None
    sums = [json.loads((p / "summary.json").read_text()) for p in done]
    burdens, marked = [], False
    for s in sums:
        if s.get("burden") is not None:
            burdens.append(s["burden"])
        else:
            marked = True
            burdens.append(_ratio(s["evaluations"], s["hits"]))
    sec = []
    for p in done:
        df = pd.read_csv(p / "metrics.csv")
        if len(df) > 1:
            sec.append(float(df["seconds"].iloc[1:].mean()))
    checked = [r for r in (s.get("recheck") or {} for s in sums) if r.get("frac_survive") is not None]
    surv = [r["frac_survive"] for r in checked]
    still = [r["frac_still_hit"] for r in checked]
    surv_evals, surv_hits, surv_runs = surviving_hits(sums)
    b_mean, b_std = _mean_std(burdens)
    d_mean, d_std = _mean_std([s["diversity_ratio"] for s in sums])
    return {
        "seeds": [s["seed"] for s in sums],
        "finished": sum(bool(s.get("finished")) for s in sums),
        "evaluations": [s["evaluations"] for s in sums],
        "hits": [s["hits"] for s in sums],
        "burden_mean": b_mean,
        "burden_std": b_std,
        "burden_is_evals_per_hit": marked,
        "pooled_evals_per_hit": _ratio(sum(s["evaluations"] for s in sums), sum(s["hits"] for s in sums)),
        "diversity_ratio_mean": d_mean,
        "diversity_ratio_std": d_std,
        "seconds_per_iteration": _mean_std(sec)[0] if sec else None,
        "recheck_runs": len(surv),
        "recheck_frac_still_hit": _mean_std(still)[0] if still else None,
        "recheck_frac_survive": _mean_std(surv)[0] if surv else None,
        "recheck_checked": sum(r["n_checked"] for r in checked),
        "recheck_still_hit": sum(round(r["frac_still_hit"] * r["n_checked"]) for r in checked),
        "recheck_survive": sum(round(r["frac_survive"] * r["n_checked"]) for r in checked),
        "recheck_far_below_hull": sum(r.get("n_far_below_hull") or 0 for r in checked),
        "surviving_runs": surv_runs,
        "evals_per_surviving_hit": _ratio(surv_evals, surv_hits) if surv_runs else None,
    }


def surviving_hits(sums: list[dict]) -> tuple[int, float, int]:
    """(evaluations, estimated surviving distinct hits, runs) pooled over the runs whose hits are re-checked
    or that have none: a run contributes ``n_hits_distinct × frac_survive`` (the re-checked subset's
    survival rate applied to all its distinct hits; exact where all were checked), a hitless run 0.
    Runs with hits not re-checked yet are left out."""
    evals, hits, runs = 0, 0.0, 0
    for s in sums:
        r = s.get("recheck") or {}
        if r.get("frac_survive") is not None:
            evals, hits, runs = evals + s["evaluations"], hits + r["n_hits_distinct"] * r["frac_survive"], runs + 1
        elif not s["hits"]:
            evals, runs = evals + s["evaluations"], runs + 1
    return evals, hits, runs


def paper_diversity(task: str, method: str) -> float | None:
    """The paper's diversity ratio for ``method`` on ``task`` (Tables 1–4), None where it has none."""
    if method not in PAPER_DIVERSITY_ORDER or task not in PAPER_DIVERSITY:
        return None
    return PAPER_DIVERSITY[task][PAPER_DIVERSITY_ORDER.index(method)]


def large_sample_ratio(burden: float, rate: dict | None) -> tuple[float | None, bool]:
    """(ratio, is_upper_bound) of ``burden`` to the prior's evaluations per hit from one large sample
    (``benchmarks/prior_hit_rates.py``). With 0 prior hits the prior's figure is only known to exceed
    the lower end of its 95 % interval, so the ratio is an upper bound."""
    if rate is None or not math.isfinite(burden):
        return None, False
    if rate["distinct_hits"]:
        return burden / rate["evals_per_hit"], False
    return burden / rate["evals_per_hit_ci95"][0], True


def target_counts(rows: list[dict], method: str, limit: float, min_diversity: float | None = None) -> tuple[int, int]:
    """(tasks where ``method`` is ≤ ``limit`` × the large-sample prior [and diverse enough], tasks with a ratio)."""
    hits = total = 0
    for r in rows:
        if r["method"] != method or r.get("ratio_large") is None:
            continue
        total += 1
        ok = r["ratio_large"] <= limit and (min_diversity is None or r["diversity_ratio_mean"] >= min_diversity)
        hits += bool(ok)
    return hits, total


MARKS = "†‡§¶"  # one per origin of kept rows, in the order the result lists them


def kept_origins(result: dict) -> dict[str, str]:
    """Origin file → settings line of the rows ``result`` kept from earlier run sets, in mark order (results
    written before origins were chained carry one ``kept_rows_from`` line; a row's bare origin stands in
    for a missing line)."""
    origins = dict(result.get("kept_origins") or {})
    kept = list(dict.fromkeys(r["kept_from"] for r in result.get("rows", []) if r.get("kept_from")))
    line = result.get("kept_rows_from")
    for origin in kept:
        origins.setdefault(origin, line if line and len(kept) == 1 else origin)
    return origins


def kept_mark(result: dict, row: dict) -> str:
    """' †' (or ' ‡', …: the mark of the row's origin) for a kept row, '' for a row measured here."""
    origin = row.get("kept_from")
    if not origin:
        return ""
    return " " + MARKS[min(list(kept_origins(result)).index(origin), len(MARKS) - 1)]


def _fmt_paper(r: dict) -> str:
    if r["paper_burden_over_1000"]:
        return "> 1000"
    return f"{r['paper_burden'][0]:.1f} ± {r['paper_burden'][1]:.1f}" if r["paper_burden"] else "–"


def markdown(result: dict) -> str:
    lines = [
        f"Budget {result['budget']} oracle evaluations per run; {result['machine']}; "
        f"config {result['config']} + {result['overrides'] or 'no overrides'}.",
        "Burden marked * = evaluations per hit (fewer than 100 distinct hits within the budget); "
        "× prior = our Burden over our frozen prior's; "
        "paper = the MatInvent paper's Tables 1–4 (budget 3000, 5 seeds).",
        "re-checked = of the hits relaxed with SevenNet-0 and re-scored (pooled over the runs): still a hit / "
        "still a hit and E_hull ≤ 0.1 (far below hull = E_hull < −0.1: a hull gap, not a discovery) "
        "(= survives); per surviving hit = evaluations over distinct hits × survival rate, pooled over the "
        "re-checked (or hitless) runs (n), the honest Burden.",
        f"× prior (large) = our Burden over the frozen prior's evaluations per hit in {result['prior_rates']} "
        "(one large prior sample; '<' = upper bound where that sample has no hit; pooled = all seeds' "
        "evaluations over all their hits, where a seed found none)."
        if result.get("prior_rates")
        else "× prior (large): no benchmarks/results/prior_hit_rates.json (python benchmarks/prior_hit_rates.py).",
        *(
            f"{mark} = row kept from {line}: an earlier run set, not re-run here."
            for mark, line in zip(MARKS, kept_origins(result).values(), strict=False)
        ),
        "",
        "| task | method | runs | hits | Burden ↓ | × prior | × prior (large) | paper Burden | Diversity ratio ↑ "
        "| paper div. | re-checked | per surviving hit | s / it |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        star = "*" if r["burden_is_evals_per_hit"] else ""
        sec = f"{r['seconds_per_iteration']:.1f}" if r["seconds_per_iteration"] else "–"
        ratio = f"{r['ratio_to_prior']:.2f}" if r["ratio_to_prior"] is not None else "–"
        burden = f"{r['burden_mean']:.1f} ± {r['burden_std']:.1f}{star}"
        if not math.isfinite(r["burden_mean"]):
            burden = "no hit" if not any(r["hits"]) else "a seed without hits"
        large = "–"
        if r.get("ratio_large") is not None:
            large = ("< " if r["ratio_large_is_bound"] else "") + f"{r['ratio_large']:.2f}"
            large += " (pooled)" if r.get("pooled") else ""
        rc = "–"
        if r["recheck_runs"]:
            n = r["recheck_checked"]
            far = r.get("recheck_far_below_hull") or 0
            note = f"; {far} far below hull" if far else ""
            rc = f"{r['recheck_still_hit']}/{n} / {r['recheck_survive']}/{n} ({r['recheck_runs']} runs{note})"
        surv = "–"
        if r.get("evals_per_surviving_hit") is not None:
            e = r["evals_per_surviving_hit"]
            surv = ("none" if not math.isfinite(e) else f"{e:.1f}") + f" (n = {r['surviving_runs']})"
        div = paper_diversity(r["task"], r["method"])
        kept = kept_mark(result, r)
        lines.append(
            f"| {r['task']} | {r['method']}{kept} | {r['finished']}/{len(r['seeds'])} | {r['hits']} | "
            f"{burden} | {ratio} | {large} | {_fmt_paper(r)} | "
            f"{r['diversity_ratio_mean']:.3f} ± {r['diversity_ratio_std']:.3f} | "
            f"{'–' if div is None else f'{div:.3f}'} | {rc} | {surv} | {sec} |"
        )
    if result.get("prior_rates"):
        from matinvent.api import DEFAULT_METHOD

        mi, n_mi = target_counts(result["rows"], "matinvent", 0.25, 0.9)
        de, n_de = target_counts(result["rows"], DEFAULT_METHOD, 0.2)
        wd, n_wd = target_counts(result["rows"], "weighted-denoising", 0.2)
        lines += [
            "",
            f"Targets (× prior (large), mean over the runs so far): `matinvent` ≤ 0.25× with diversity ratio ≥ 0.9 "
            f"on {mi} of {n_mi} tasks; the default method (`{DEFAULT_METHOD}`) ≤ 0.2× on {de} of {n_de}; "
            f"`weighted-denoising` ≤ 0.2× on {wd} of {n_wd}.",
        ]
    return "\n".join(lines) + "\n"
