"""RL benchmark on the cheap-oracle tasks: Burden and Diversity ratio per method (paper Tables 1–2).

    python benchmarks/rl_tasks.py [--tasks density hhi] [--seeds 0 1 2]
        [--methods prior matinvent hill-climb reinforce weighted-denoising]
        [--budget 600] [--jobs 2] [--runs runs/rl_bench]
    python benchmarks/rl_tasks.py --table-only      # just rebuild the table from the run folders

Each (task, method, seed) is one ``matinvent optimize`` run folder under ``--runs`` (1 torch
thread each, ``--jobs`` at a time). The script is resumable: finished runs are skipped and
interrupted ones continue with ``--resume``, so it can be stopped and started again at will.
With fewer than 100 hits inside the budget, Burden is reported as evaluations per hit (marked).
The diversity ratio is taken at min(3000, budget) evaluations. Writes
``benchmarks/results/rl_tasks.{json,md}`` and overlaid curves ``rl_tasks_<task>_*.png``.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "rl_benchmark.yaml"


def run_dir(runs: Path, task: str, method: str, seed: int) -> Path:
    return runs / f"{task}_{method}_s{seed}"


def is_finished(path: Path, budget: int) -> bool:
    summary = path / "summary.json"
    if not summary.exists():
        return False
    s = json.loads(summary.read_text())
    return bool(s.get("finished")) and s.get("budget") == budget


def run_config(runs: Path, budget: int) -> Path:
    """configs/rl_benchmark.yaml with the diversity ratio taken at min(3000, budget) and 1 thread."""
    import yaml

    cfg = yaml.safe_load(CONFIG.read_text()) or {}
    cfg.update({"diversity_budget": min(3000, budget), "threads": 1})
    path = runs / f"config_budget{budget}.yaml"
    runs.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def command(task: str, method: str, seed: int, budget: int, path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "matinvent.cli", "optimize", "--task", task, "--method", method]
    cmd += ["--budget", str(budget), "--seed", str(seed), "--out", str(path)]
    cmd += ["--config", str(run_config(path.parent, budget))]
    if (path / "run.json").exists():
        cmd.append("--resume")
    return cmd


def run_all(args: argparse.Namespace) -> None:
    todo = [
        (t, m, s)
        for s in args.seeds
        for t in args.tasks
        for m in args.methods
        if not is_finished(run_dir(args.runs, t, m, s), args.budget)
    ]
    print(f"{len(todo)} runs to do (budget {args.budget} evaluations each, {args.jobs} at a time)", flush=True)
    running: list[tuple[subprocess.Popen, str]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            t, m, s = todo.pop(0)
            path = run_dir(args.runs, t, m, s)
            path.parent.mkdir(parents=True, exist_ok=True)
            log = open(path.parent / f"{path.name}.log", "a")  # noqa: SIM115 - closed with the process
            running.append((subprocess.Popen(command(t, m, s, args.budget, path), stdout=log, stderr=log), path.name))
            print(f"started {path.name}", flush=True)
        time.sleep(5)
        for proc, name in list(running):
            if proc.poll() is not None:
                running.remove((proc, name))
                print(f"finished {name} (exit {proc.returncode})", flush=True)


def _mean_std(values: list[float]) -> tuple[float, float]:
    s = pd.Series(values, dtype=float)
    return float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else 0.0


def table(args: argparse.Namespace) -> dict:
    rows = []
    for t in args.tasks:
        for m in args.methods:
            runs = [run_dir(args.runs, t, m, s) for s in args.seeds]
            done = [p for p in runs if (p / "summary.json").exists()]
            if not done:
                continue
            sums = [json.loads((p / "summary.json").read_text()) for p in done]
            burdens, marked = [], False
            for s in sums:
                if s.get("burden") is not None:
                    burdens.append(s["burden"])
                else:
                    marked = True
                    burdens.append(s["evaluations"] / s["hits"] if s["hits"] else math.inf)
            metrics = [pd.read_csv(p / "metrics.csv") for p in done]
            sec = [float(df["seconds"].iloc[1:].mean()) for df in metrics if len(df) > 1]
            b_mean, b_std = _mean_std(burdens)
            d_mean, d_std = _mean_std([s["diversity_ratio"] for s in sums])
            rows.append(
                {
                    "task": t,
                    "method": m,
                    "seeds": [s["seed"] for s in sums],
                    "finished": sum(bool(s.get("finished")) for s in sums),
                    "evaluations": [s["evaluations"] for s in sums],
                    "hits": [s["hits"] for s in sums],
                    "burden_mean": b_mean,
                    "burden_std": b_std,
                    "burden_is_evals_per_hit": marked,
                    "diversity_ratio_mean": d_mean,
                    "diversity_ratio_std": d_std,
                    "seconds_per_iteration": _mean_std(sec)[0] if sec else None,
                }
            )
    return {
        "machine": f"{platform.machine()} CPU, 2 cores, {args.jobs} runs in parallel, 1 torch thread each",
        "budget": args.budget,
        "config": str(CONFIG.relative_to(ROOT)),
        "command": "python benchmarks/rl_tasks.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }


def write_outputs(result: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rl_tasks.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Budget {result['budget']} oracle evaluations per run; {result['machine']}.",
        "Burden marked * = evaluations per hit (fewer than 100 distinct hits within the budget).",
        "",
        "| task | method | runs | hits | Burden ↓ | Diversity ratio ↑ | s / iteration |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        star = "*" if r["burden_is_evals_per_hit"] else ""
        sec = f"{r['seconds_per_iteration']:.1f}" if r["seconds_per_iteration"] else "–"
        lines.append(
            f"| {r['task']} | {r['method']} | {r['finished']}/{len(r['seeds'])} | {r['hits']} | "
            f"{r['burden_mean']:.1f} ± {r['burden_std']:.1f}{star} | "
            f"{r['diversity_ratio_mean']:.3f} ± {r['diversity_ratio_std']:.3f} | {sec} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "rl_tasks.md").write_text(text)
    print(text)
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
            shutil.copy(png, RESULTS / f"rl_tasks_{t}_{png.name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["density", "hhi"])
    methods = ["prior", "matinvent", "hill-climb", "reinforce", "weighted-denoising"]
    ap.add_argument("--methods", nargs="+", default=methods)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "rl_bench")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        run_all(args)
    write_outputs(table(args), args)


if __name__ == "__main__":
    main()
