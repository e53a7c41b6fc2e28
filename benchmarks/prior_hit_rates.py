"""The frozen prior's hit rate on all 10 tasks from one large sample (the paper's "> 1000" rows).

    python benchmarks/prior_hit_rates.py                  # 6,400 crystals, seed 100, T = 25, mp20_masked
    python benchmarks/prior_hit_rates.py --n 640 --name prior_hit_rates_small

A 600-evaluation prior run finds 0 hits on T2–T4, so its evaluations per hit (and every ratio to
it) is undefined. Here one sample of ``--n`` crystals from the prior is gated exactly as the RL
loop gates (``configs/rl_benchmark.yaml``'s ``validity``), the valid ones are scored once by each
property oracle, and each task's hits are counted on those values: evaluations = valid crystals,
hits = distinct reduced formulas among them, with an exact 95 % Poisson interval on the hit count.
The sample is drawn in batches of the RL batch size with the RL sampler's step count, so it is
the distribution a ``--method prior`` run evaluates. Writes ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import chi2

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "rl_benchmark.yaml"
SPO = ["band_gap", "formation_energy", "bulk_modulus", "shear_modulus", "density", "hhi"]
TASKS = [*SPO, "T1", "T2", "T3", "T4"]


def poisson_ci(k: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for a Poisson count ``k``."""
    a = 1 - level
    lo = 0.0 if k == 0 else float(chi2.ppf(a / 2, 2 * k) / 2)
    return lo, float(chi2.ppf(1 - a / 2, 2 * k + 2) / 2)


def task_row(task, values: dict[str, np.ndarray], formulas: list[str], budget: int) -> dict:
    """Evaluations, distinct hits and evaluations per hit of ``task`` on the scored sample."""
    from matinvent.rl.metrics import RunningMetrics

    _, hit, _ = task.rewards({p: values[p] for p in task.properties})
    m = RunningMetrics()  # the RL loop's counts: distinct hit formulas among evaluated crystals
    m.add_many((True, f, bool(h)) for f, h in zip(formulas, hit, strict=True))
    n = m.evaluations
    lo, hi = poisson_ci(m.hits)
    return {
        "task": task.name,
        "window": task.window_text(),
        "evaluations": n,
        "hits": int(hit.sum()),
        "distinct_hits": m.hits,
        "evals_per_hit": m.evals_per_hit,
        "evals_per_hit_ci95": [n / hi, n / lo if lo > 0 else float("inf")],
        f"expected_hits_in_{budget}": budget * m.hits / n,
    }


def score_properties(pool: list) -> dict[str, np.ndarray]:
    """Each single-property task's value for every crystal of ``pool`` (its oracle, no validity gate)."""
    from matinvent.scoring.scorer import Scorer
    from matinvent.scoring.tasks import load_task

    values: dict[str, np.ndarray] = {}
    for prop in SPO:
        scorer = Scorer(load_task(prop), validity="none")
        try:
            values[prop] = np.asarray(scorer(pool).values[prop], dtype=np.float64)
        finally:
            scorer.close()
        print(f"scored {prop}", flush=True)
    return values


def provenance(script: str, threads: int, argv: list[str] | None) -> dict[str, str]:
    """Where and how a result was made: the machine and the command line that reruns it."""
    args = argv if argv is not None else sys.argv[1:]
    return {
        "machine": f"{platform.machine()} CPU, {threads} torch thread(s), python {sys.version.split()[0]}",
        "command": f"python benchmarks/{script} " + " ".join(args),
    }


def write_result(name: str, result: dict, text: str) -> None:
    """``benchmarks/results/<name>.json`` and ``.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{name}.md").write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6400, help="crystals sampled (before the validity gate)")
    ap.add_argument("--seed", type=int, default=100, help="sampling seed (the RL benchmark uses 7–9)")
    ap.add_argument("--prior", default=None, help="checkpoint folder or bundled name (default: the config's)")
    ap.add_argument("--budget", type=int, default=600, help="the RL benchmark's budget, for the expected hits")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="prior_hit_rates")
    args = ap.parse_args(argv)

    import torch

    from matinvent.crystal.validity import gate_flags
    from matinvent.prior.checkpoint import load_prior, resolve_checkpoint
    from matinvent.prior.sampler import sample_crystals
    from matinvent.rl.trainer import formula_of
    from matinvent.scoring.tasks import load_task

    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(CONFIG.read_text())
    prior_name = args.prior or cfg["prior"]
    model = load_prior(resolve_checkpoint(prior_name))
    t0 = time.perf_counter()
    crystals = sample_crystals(
        model, args.n, seed=args.seed, steps=cfg["sample_steps"], batch_size=cfg["batch_size"], progress=True
    )
    t_sample = time.perf_counter() - t0
    built = [c for c in crystals if c is not None]
    valid = gate_flags(built, cfg["validity"])[0]
    pool = [c for c, v in zip(built, valid, strict=True) if v]
    formulas = [formula_of(c) for c in pool]
    print(f"{len(crystals)} sampled in {t_sample:.0f} s, {len(pool)} pass {cfg['validity']}", flush=True)

    t1 = time.perf_counter()
    values = score_properties(pool)
    t_score = time.perf_counter() - t1

    rows = [task_row(load_task(t), values, formulas, args.budget) for t in TASKS]
    result = {
        "prior": prior_name,
        "n_sampled": args.n,
        "n_valid": len(pool),
        "seed": args.seed,
        "sample_steps": cfg["sample_steps"],
        "validity": cfg["validity"],
        "seconds_sample": t_sample,
        "seconds_score": t_score,
        **provenance("prior_hit_rates.py", args.threads, argv),
        "rows": rows,
    }
    key = f"expected_hits_in_{args.budget}"
    lines = [
        f"Prior `{prior_name}`, {args.n} crystals sampled (seed {args.seed}, T = {cfg['sample_steps']}), "
        f"{len(pool)} pass `{cfg['validity']}` = evaluations; {result['machine']}; sampling "
        f"{t_sample:.0f} s, scoring {t_score:.0f} s. Command: `{result['command']}`.",
        "",
        f"| task | window | evaluations | distinct hits | evaluations per hit (95 % CI) | hits in {args.budget} |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["evals_per_hit_ci95"]
        lines.append(
            f"| {r['task']} | {r['window']} | {r['evaluations']} | {r['distinct_hits']} | "
            f"{r['evals_per_hit']:.1f} ({lo:.1f}–{hi:.1f}) | {r[key]:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    write_result(args.name, result, text)
    print(text)


if __name__ == "__main__":
    main()
