"""Seconds per RL iteration with every crystal relaxed in the loop (``relax: mlip``), one at a time vs batched.

Runs ``matinvent optimize`` twice on the same task, seed and budget, differing only in
``relax_engine`` (``ase``: one crystal at a time; ``batched``: all of an iteration's at once on
torch-sim), with the re-check off, and reports wall time, iterations, s / iteration, evaluations and
distinct hits of each.

    python benchmarks/relax_loop_speed.py                  # density, budget 64, seed 0
    python benchmarks/relax_loop_speed.py --task hhi --budget 32 --name relax_loop_speed_hhi

Writes ``benchmarks/results/<name>.json`` and ``.md``; run folders under ``runs/relax_loop_speed/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ENGINES = ("ase", "batched")


def run(task: str, budget: int, seed: int, engine: str, threads: int, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{engine}.yaml"
    config.write_text(f"relax: mlip\nrelax_engine: {engine}\nrecheck_n: 0\n")
    cmd = [sys.executable, "-m", "matinvent.cli", "optimize", "--task", task, "--budget", str(budget)]
    cmd += ["--seed", str(seed), "--out", str(out), "--config", str(config), "--threads", str(threads)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    return {
        "engine": engine,
        "wall_s": round(wall, 1),
        "run_wall_s": summary.get("wall_s"),
        "iterations": summary["iterations"],
        "s_per_iteration": round(summary["wall_s"] / max(summary["iterations"], 1), 2),
        "evaluations": summary["evaluations"],
        "hits": summary["hits"],
        "command": " ".join(cmd[1:]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="density")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="relax_loop_speed")
    args = ap.parse_args()
    rows = []
    for engine in ENGINES:
        rows.append(run(args.task, args.budget, args.seed, engine, args.threads, ROOT / "runs" / args.name / engine))
        print(rows[-1], flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, CPU, {args.threads} torch threads",
        "command": "python benchmarks/relax_loop_speed.py " + " ".join(sys.argv[1:]),
        "task": args.task,
        "budget": args.budget,
        "seed": args.seed,
        "rows": rows,
    }
    lines = [
        f"# RL iterations with relaxation in the loop ({result['date']})",
        "",
        f"Task {args.task}, budget {args.budget}, seed {args.seed}, `relax: mlip` (SevenNet-0, ≤ 200 FIRE steps), "
        f"re-check off; {result['machine']}. Command: `{result['command']}`",
        "",
        "| relax_engine | wall s | iterations | s / iteration | evaluations | distinct hits |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['run_wall_s']} | {r['iterations']} | {r['s_per_iteration']} | {r['evaluations']} "
            f"| {r['hits']} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
