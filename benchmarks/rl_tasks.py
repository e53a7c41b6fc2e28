"""RL benchmark, paper Tables 1–4: Burden and Diversity ratio per task and method, 3 seeds.

    python benchmarks/rl_tasks.py                       # all 10 tasks × 5 methods × seeds 7 8 9, budget 600
    python benchmarks/rl_tasks.py --tasks density hhi --methods prior matinvent --seeds 7
    python benchmarks/rl_tasks.py --set ppo_clip=0.2 --set natoms_action=true --runs runs/variant
    python benchmarks/rl_tasks.py --recheck 3           # afterwards: relax ≤ 3 hits per run (SevenNet-0)
    python benchmarks/rl_tasks.py --table-only          # rebuild tables/curves from the run folders
    python benchmarks/rl_tasks.py --paper               # the full reproduction (GPU machine, see below)

Each (task, method, seed) is one ``matinvent optimize`` run folder under ``--runs`` (1 torch
thread each, ``--jobs`` at a time) with ``configs/rl_benchmark.yaml`` plus ``--set`` overrides.
Resumable: finished runs are skipped, interrupted ones continue with ``--resume``. With fewer
than 100 distinct hits in the budget, Burden is given as evaluations per hit (marked *). The
diversity ratio is taken at min(3000, budget) evaluations. ``--paper`` = budget 3000, seeds
0–4, ``device=cuda``, 8 runs at a time on one GPU. Writes ``benchmarks/results/<name>.{json,md}``
(tables in the paper's layout with the paper's numbers and the ratio to our frozen prior) and
overlaid curves ``<name>_<task>_*.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "rl_benchmark.yaml"
SPO = ["band_gap", "formation_energy", "bulk_modulus", "shear_modulus", "density", "hhi"]
MPO = ["T1", "T2", "T3", "T4"]
METHODS = ["prior", "matinvent", "weighted-denoising", "reinforce", "hill-climb"]
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


def run_dir(runs: Path, task: str, method: str, seed: int) -> Path:
    return runs / f"{task}_{method}_s{seed}"


def is_finished(path: Path, budget: int) -> bool:
    summary = path / "summary.json"
    if not summary.exists():
        return False
    s = json.loads(summary.read_text())
    return bool(s.get("finished")) and s.get("budget") == budget


def parse_sets(items: list[str]) -> dict:
    """``key=value`` overrides, values read as YAML (``true``, ``0.2``, ``{L: 0.1}``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_config(runs: Path, budget: int, overrides: dict) -> Path:
    """configs/rl_benchmark.yaml + overrides, the diversity ratio at min(3000, budget), 1 thread."""
    cfg = yaml.safe_load(CONFIG.read_text()) or {}
    cfg.update({"diversity_budget": min(3000, budget), "threads": 1})
    cfg.update(overrides)
    path = runs / f"config_budget{budget}.yaml"
    runs.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg, sort_keys=False)
    if path.exists() and any(runs.glob("*/run.json")):
        diff = config_difference(yaml.safe_load(path.read_text()) or {}, cfg)
        if diff:
            raise SystemExit(f"{path}: {diff}; this invocation's settings differ, use another --runs folder")
    path.write_text(text)
    return path


def config_difference(old: dict, new: dict) -> str | None:
    """The first setting that differs; a key the old file lacks is fine at ``RLConfig``'s default (a newer
    release's switch, off), so a benchmark started before the switch existed still resumes."""
    import dataclasses

    from matinvent.rl.config import RLConfig

    defaults = dataclasses.asdict(RLConfig())
    for key in dict.fromkeys([*old, *new]):
        if key not in new:
            return f"key {key!r} is gone"
        if key not in old:
            if key not in defaults or new[key] != defaults[key]:
                return f"key {key!r} is new and not at its default"
        elif old[key] != new[key]:
            return f"key {key!r} was {old[key]!r}, now {new[key]!r}"
    return None


def command(task: str, method: str, seed: int, budget: int, path: Path, config: Path) -> list[str]:
    cmd = [sys.executable, "-m", "matinvent.cli", "optimize", "--task", task, "--method", method]
    cmd += ["--budget", str(budget), "--seed", str(seed), "--out", str(path), "--config", str(config)]
    if (path / "run.json").exists():
        cmd.append("--resume")
    return cmd


def run_all(jobs: list[list[str]], names: list[str], logs: list[Path], n_parallel: int) -> None:
    """Run the commands ``n_parallel`` at a time, each logging to its file."""
    todo = list(zip(jobs, names, logs, strict=True))
    print(f"{len(todo)} runs to do, {n_parallel} at a time", flush=True)
    running: list[tuple[subprocess.Popen, str]] = []
    while todo or running:
        while todo and len(running) < n_parallel:
            cmd, name, log = todo.pop(0)
            fh = open(log, "a")  # noqa: SIM115 - closed with the process
            running.append((subprocess.Popen(cmd, stdout=fh, stderr=fh), name))
            print(f"started {name}", flush=True)
        time.sleep(2)
        for proc, name in list(running):
            if proc.poll() is not None:
                running.remove((proc, name))
                print(f"finished {name} (exit {proc.returncode})", flush=True)


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
    rc = [s.get("recheck") or {} for s in sums]
    surv = [r["frac_survive"] for r in rc if r.get("frac_survive") is not None]
    still = [r["frac_still_hit"] for r in rc if r.get("frac_still_hit") is not None]
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
    }


PRIOR_RATES = RESULTS / "prior_hit_rates.json"


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


def table(args: argparse.Namespace) -> dict:
    rates = {}
    if args.prior_rates and Path(args.prior_rates).exists():
        rates = {r["task"]: r for r in json.loads(Path(args.prior_rates).read_text())["rows"]}
    rows = []
    for t in args.tasks:
        prior = None
        for m in args.methods:
            row = run_row([run_dir(args.runs, t, m, s) for s in args.seeds])
            if row is None:
                continue
            row.update(task=t, method=m)
            if m == "prior":
                prior = row["burden_mean"]
            row["ratio_to_prior"] = row["burden_mean"] / prior if prior and math.isfinite(prior) else None
            # a seed without hits makes the mean infinite: then the pooled evaluations per hit of all seeds
            row["pooled"] = not math.isfinite(row["burden_mean"]) and math.isfinite(row["pooled_evals_per_hit"])
            figure = row["pooled_evals_per_hit"] if row["pooled"] else row["burden_mean"]
            row["ratio_large"], row["ratio_large_is_bound"] = large_sample_ratio(figure, rates.get(t))
            paper = PAPER_BURDEN.get(t, {}).get(m, "n/a")
            row["paper_burden"] = paper if paper != "n/a" else None
            row["paper_burden_over_1000"] = paper is None
            rows.append(row)
    return {
        "machine": f"{platform.machine()} CPU, {args.jobs} runs in parallel, 1 torch thread each",
        "budget": args.budget,
        "config": str(CONFIG.relative_to(ROOT)),
        "overrides": parse_sets(args.set),
        "command": "python benchmarks/rl_tasks.py " + " ".join(sys.argv[1:]),
        "prior_rates": str(Path(args.prior_rates).resolve().relative_to(ROOT)) if rates else None,
        "rows": rows,
    }


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
        "re-checked = of the hits relaxed with SevenNet-0 and re-scored: still a hit / still a hit and E_hull ≤ 0.1.",
        f"× prior (large) = our Burden over the frozen prior's evaluations per hit in {result['prior_rates']} "
        "(one large prior sample; '<' = upper bound where that sample has no hit; pooled = all seeds' "
        "evaluations over all their hits, where a seed found none)."
        if result.get("prior_rates")
        else "× prior (large): no benchmarks/results/prior_hit_rates.json (python benchmarks/prior_hit_rates.py).",
        "",
        "| task | method | runs | hits | Burden ↓ | × prior | × prior (large) | paper Burden | Diversity ratio ↑ "
        "| re-checked | s / it |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
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
            rc = f"{r['recheck_frac_still_hit']:.2f} / {r['recheck_frac_survive']:.2f} ({r['recheck_runs']} runs)"
        lines.append(
            f"| {r['task']} | {r['method']} | {r['finished']}/{len(r['seeds'])} | {r['hits']} | "
            f"{burden} | {ratio} | {large} | {_fmt_paper(r)} | "
            f"{r['diversity_ratio_mean']:.3f} ± {r['diversity_ratio_std']:.3f} | {rc} | {sec} |"
        )
    if result.get("prior_rates"):
        mi, n_mi = target_counts(result["rows"], "matinvent", 0.25, 0.9)
        wd, n_wd = target_counts(result["rows"], "weighted-denoising", 0.2)
        lines += [
            "",
            f"Targets (× prior (large), mean over the runs so far): `matinvent` ≤ 0.25× with diversity ratio ≥ 0.9 "
            f"on {mi} of {n_mi} tasks; `weighted-denoising` (the default) ≤ 0.2× on {wd} of {n_wd}.",
        ]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)
    if args.no_curves:
        return
    from matinvent.report import write_report

    for t in args.tasks:
        dirs = [
            run_dir(args.runs, t, m, s)
            for m in args.methods
            for s in args.seeds
            if (run_dir(args.runs, t, m, s) / "metrics.csv").exists()
        ]
        if not dirs:
            continue
        tmp = args.runs / f"report_{t}"
        write_report(dirs, tmp, top=5)
        for png in tmp.glob("*.png"):
            shutil.copy(png, RESULTS / f"{args.name}_{t}_{png.name}")


def recheck_all(args: argparse.Namespace) -> None:
    """``matinvent recheck --n-max N`` on every finished run that has hits and no recheck.json yet."""
    jobs, names, logs = [], [], []
    for s in args.seeds:
        for t in args.tasks:
            for m in args.methods:
                p = run_dir(args.runs, t, m, s)
                if not is_finished(p, args.budget) or (p / "recheck.json").exists():
                    continue
                if not json.loads((p / "summary.json").read_text()).get("hits"):
                    continue
                cmd = [sys.executable, "-m", "matinvent.cli", "recheck", str(p), "--n-max", str(args.recheck)]
                jobs.append(cmd + ["--seed", str(s), "--threads", "1", "--no-mlip-moduli"])
                names.append(f"recheck {p.name}")
                logs.append(p.parent / f"{p.name}.recheck.log")
    run_all(jobs, names, logs, args.jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=SPO + MPO)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "rl_bench")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (YAML value)")
    ap.add_argument("--name", default="rl_tasks", help="stem of the result files under benchmarks/results/")
    ap.add_argument("--recheck", type=int, default=0, help="relax and re-score up to N hits per finished run")
    ap.add_argument("--paper", action="store_true", help="budget 3000, seeds 0-4, device cuda, 8 runs at a time")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument(
        "--prior-rates", default=PRIOR_RATES, help="prior_hit_rates.py's JSON for the × prior (large) column"
    )
    ap.add_argument("--no-curves", action="store_true")
    args = ap.parse_args()
    if args.paper:
        args.budget, args.seeds, args.jobs = 3000, [0, 1, 2, 3, 4], 8
        args.set = ["device=cuda", *args.set]
    if args.recheck:
        recheck_all(args)
    elif not args.table_only:
        config = run_config(args.runs, args.budget, {"recheck_n": 0, **parse_sets(args.set)})
        jobs, names, logs = [], [], []
        for s in args.seeds:
            for t in args.tasks:
                for m in args.methods:
                    p = run_dir(args.runs, t, m, s)
                    if not is_finished(p, args.budget):
                        jobs.append(command(t, m, s, args.budget, p, config))
                        names.append(p.name)
                        logs.append(p.parent / f"{p.name}.log")
        run_all(jobs, names, logs, args.jobs)
    write_outputs(table(args), args)


if __name__ == "__main__":
    main()
