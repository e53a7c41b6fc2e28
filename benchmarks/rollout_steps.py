"""Cheaper rollouts: prior quality and the cost of one RL iteration at 100, 50 and 25 sampler steps.

    python benchmarks/rollout_steps.py [--steps 100 50 25] [--n 200] [--iterations 3] [--threads 1]

For each T: ``--n`` samples of the default prior (seed 3) → physical validity, physical +
SMACT, fraction with > 5 elements, mean #elements; then ``--iterations`` iterations of
``matinvent`` on the density task (32 crystals: sample + gate + score + update, the RL defaults
of ``configs/rl_benchmark.yaml`` with this T) → seconds per iteration (mean after the first).
Writes ``benchmarks/results/rollout_steps.{json,md}``. Timings need a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from matinvent.crystal.validity import gate_flags
from matinvent.prior.checkpoint import load_prior, resolve_checkpoint
from matinvent.rl.config import rl_config_from_dict
from matinvent.rl.trainer import RLTrainer
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def quality(prior, steps: int, n: int) -> dict:
    g = torch.Generator().manual_seed(3)
    crystals, t0 = [], time.time()
    while len(crystals) < n:
        crystals += prior.sample(min(50, n - len(crystals)), generator=g, steps=steps).final.to_crystals(strict=False)
    seconds = time.time() - t0
    n_el = np.array([len(set(c.Z.tolist())) if c is not None else 0 for c in crystals])
    return {
        "n": n,
        "physical_validity": float(gate_flags(crystals, "physical")[0].mean()),
        "physical_and_smact": float(gate_flags(crystals, "physical+composition")[0].mean()),
        "frac_over_5_elements": float((n_el > 5).mean()),
        "mean_n_elements": float(n_el.mean()),
        "sample_s_per_crystal": seconds / n,
    }


def iteration_cost(steps: int, iterations: int, threads: int) -> float:
    cfg = yaml.safe_load((ROOT / "configs" / "rl_benchmark.yaml").read_text())
    cfg.update(sample_steps=steps, threads=threads)
    cfg = rl_config_from_dict(cfg)
    task = load_task("density")
    prior = load_prior(resolve_checkpoint(cfg.prior))
    with tempfile.TemporaryDirectory() as d:
        trainer = RLTrainer(cfg, task, Scorer(task), prior, "matinvent", 0, d, "bench")
        seconds = []
        for _ in range(iterations):
            t0 = time.time()
            trainer.step(10**9)
            seconds.append(time.time() - t0)
        trainer.close()
    return float(np.mean(seconds[1:] if len(seconds) > 1 else seconds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", nargs="+", type=int, default=[100, 50, 25])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior_name = yaml.safe_load((ROOT / "configs" / "rl_benchmark.yaml").read_text())["prior"]
    prior = load_prior(resolve_checkpoint(prior_name))
    rows = []
    for steps in args.steps:
        row = {"steps": steps, **quality(prior, steps, args.n)}
        row["iteration_s"] = iteration_cost(steps, args.iterations, args.threads)
        print(row, flush=True)
        rows.append(row)
    result = {
        "prior": prior_name,
        "machine": f"{platform.machine()} CPU, {args.threads} torch thread(s)",
        "command": "python benchmarks/rollout_steps.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rollout_steps.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Prior {prior_name}, {args.n} samples (seed 3) per T; {result['machine']}.",
        "",
        "| T | physical | physical + SMACT | > 5 elements | mean #el | s / crystal (sample) | s / RL iteration |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['steps']} | {r['physical_validity']:.3f} | {r['physical_and_smact']:.3f} | "
            f"{r['frac_over_5_elements']:.3f} | {r['mean_n_elements']:.2f} | {r['sample_s_per_crystal']:.3f} | "
            f"{r['iteration_s']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "rollout_steps.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
