"""Seconds per RL iteration, by phase, alone and with a second job on the machine (issue 33).

One ``matinvent`` iteration on the raw pipeline (density task, ``relax: none``, the default prior and
settings: 32 crystals, 25 sampler steps, 4 updates of K = 10 steps): ``sample`` (the reverse chain and
the sampling log-probs), ``score`` (gate + oracle), ``remember`` (memory, filter) and ``update``
(the optimiser steps), read off :attr:`matinvent.rl.trainer.RLTrainer.phases`. Scenarios:

- ``alone, T threads``: one job;
- ``two jobs, T threads each``: two identical jobs started together (a second run, Dask workers …):
  the thread-oversubscription case, with torch's default OpenMP wait policy and with
  ``OMP_WAIT_POLICY=PASSIVE`` (what the ``matinvent`` command sets unless the user set it).

    python benchmarks/rl_speed.py                     # ≈ 10 min on 2 cores
    python benchmarks/rl_speed.py --iterations 3 --name rl_speed_smoke
    python benchmarks/rl_speed.py --quick --before ../old_checkout/src   # before/after a change, interleaved

Writes ``benchmarks/results/<name>.json`` and ``.md``; the first iteration of each job is a warm-up and
is left out of the means.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from result_files import stamp, write

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("sample", "score", "remember", "update")


def worker(args: argparse.Namespace) -> None:
    """One job: ``--iterations`` iterations with ``--threads`` torch threads; per-iteration phases to ``--out``."""
    import torch

    torch.set_num_threads(args.threads)
    from matinvent.prior.checkpoint import load_prior, resolve_checkpoint
    from matinvent.rl import RLConfig
    from matinvent.rl.trainer import RLTrainer
    from matinvent.scoring.scorer import Scorer
    from matinvent.scoring.tasks import load_task

    cfg = RLConfig(relax="none", stability="none", threads=args.threads)
    task = load_task("density")
    prior = load_prior(resolve_checkpoint(cfg.prior))
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = RLTrainer(cfg, task, Scorer(task), prior, "matinvent", args.seed, run_dir, "speed")
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            trainer.step(budget=10**9)
            rows.append({**trainer.phases, "total": time.perf_counter() - t0})
        trainer.close()
    Path(args.out).write_text(json.dumps(rows))


def run_jobs(
    n_jobs: int, threads: int, iterations: int, env_extra: dict[str, str], src: str | None = None
) -> list[list[dict]]:
    env = {**os.environ, **env_extra}
    if src:  # another checkout's package (the code before a change), same script and machine
        env["PYTHONPATH"] = src
    env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"job{j}.json" for j in range(n_jobs)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--threads",
                    str(threads),
                    "--iterations",
                    str(iterations),
                    "--seed",
                    str(j),
                    "--out",
                    str(out),
                ],
                env=env,
            )  # fmt: skip
            for j, out in enumerate(outs)
        ]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"a benchmark job failed (exit {p.returncode})")
        return [json.loads(out.read_text()) for out in outs]


def summarise(jobs: list[list[dict]]) -> dict[str, float]:
    rows = [r for job in jobs for r in job[1:]]  # the first iteration of each job: warm-up
    return {k: sum(r[k] for r in rows) / len(rows) for k in (*PHASES, "total")}


def markdown(result: dict) -> str:
    lines = [
        f"# RL iteration speed ({result['date']})",
        "",
        f"`{result['command']}` on {result['machine']} ({result['cores']} cores), torch {result['torch']}; "
        f"density task, raw pipeline, default settings; {result['iterations'] - 1} timed iterations per job "
        "(after one warm-up), seconds per iteration (mean over jobs).",
        "",
        "| scenario | OMP wait policy | code | " + " | ".join(PHASES) + " | **total** |",
        "|---|---|---|" + "---|" * len(PHASES) + "---|",
    ]
    for row in result["scenarios"]:
        cells = [f"{row['phases'][k]:.2f}" for k in PHASES]
        code = row.get("code", "this tree")
        lines.append(
            f"| {row['label']} | {row['policy']} | {code} | "
            + " | ".join(cells)
            + f" | **{row['phases']['total']:.2f}** |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="rl_speed")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="three scenarios: alone (all / half the cores), two jobs")
    ap.add_argument("--before", help="another checkout's src/ folder: each scenario also runs with it, interleaved")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    half = max(1, args.cores // 2)
    scenarios = [  # (label, jobs, threads, env)
        (f"alone, {args.cores} threads", 1, args.cores, {}, "default"),
        (f"alone, {args.cores} threads", 1, args.cores, {"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE"),
        (f"alone, {half} thread(s)", 1, half, {}, "default"),
        (f"two jobs, {args.cores} threads each", 2, args.cores, {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
        (f"two jobs, {args.cores} threads each", 2, args.cores, {"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE"),
        (f"two jobs, {half} thread(s) each", 2, half, {}, "default"),
    ]
    if args.quick:
        scenarios = [scenarios[0], scenarios[2], scenarios[5]]
    codes = [(None, "this tree")] + ([(args.before, f"before ({args.before})")] if args.before else [])
    out = []
    for label, jobs, threads, env, policy in scenarios:
        for src, code in codes:
            print(f"{label} ({policy}, {code}) ...", flush=True)
            out.append({"label": label, "jobs": jobs, "threads": threads, "policy": policy, "code": code,
                        "phases": summarise(run_jobs(jobs, threads, args.iterations, env, src))})  # fmt: skip
    result = {"scenarios": out, "iterations": args.iterations, "cores": args.cores, "torch": torch.__version__}
    result.update(stamp())
    write(args.name, result, markdown(result))


if __name__ == "__main__":
    main()
