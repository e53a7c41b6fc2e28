"""Prior speed on CPU: sampling crystals/s (full T and respaced), training-step time, peak memory.

Each measurement runs in a fresh process so that its peak resident memory is its own.

    python benchmarks/prior_speed.py [--checkpoint DIR] [--threads 2]

Prints a table and writes benchmarks/results/prior_speed_<checkpoint>_<threads>threads.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp_20" / "val.csv.gz"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "mp20_sample.csv"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sampling(checkpoint: str | None, threads: int, n: int, steps: int | None) -> dict:
    import torch

    from matinvent.checkpoint import load_prior

    torch.set_num_threads(threads)
    model = load_prior(checkpoint)
    gen = torch.Generator().manual_seed(0)
    model.sample(2, generator=gen, steps=2)  # warm-up
    base = _peak_mib()
    t0 = time.perf_counter()
    n_steps = steps or model.config.timesteps
    traj = model.sample(n, generator=gen, steps=n_steps)
    dt = time.perf_counter() - t0
    return {
        "crystals": n,
        "steps": n_steps,
        "seconds": dt,
        "crystals_per_s": n / dt,
        "mean_atoms": float(traj.num_atoms.float().mean()),
        "peak_rss_mib": _peak_mib(),
        "rss_before_mib": base,
    }


def _train_step(checkpoint: str | None, threads: int, batch_size: int, repeats: int) -> dict:
    import torch

    from matinvent.batch import CrystalBatch
    from matinvent.checkpoint import load_prior
    from matinvent.datasets import read_cdvae_csv

    torch.set_num_threads(threads)
    src = DATA if DATA.exists() else FIXTURE
    crystals = read_cdvae_csv(src, limit=max(batch_size * 2, 64)).crystals
    model = load_prior(checkpoint).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = CrystalBatch.from_crystals((crystals * (1 + batch_size // len(crystals)))[:batch_size])
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "batch_size": batch_size,
        "median_s": times[len(times) // 2],
        "min_s": times[0],
        "mean_atoms": float(batch.num_atoms.float().mean()),
        "peak_rss_mib": _peak_mib(),
    }


def _run(fn, *args) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="prior folder (default: bundled)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-full", type=int, default=16, help="crystals for the full-T sampling run")
    ap.add_argument("--n-respaced", type=int, default=64)
    ap.add_argument("--respaced-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import torch

    from matinvent.checkpoint import checkpoint_info, resolve_checkpoint

    rows = []
    full = _run(_sampling, args.checkpoint, args.threads, args.n_full, None)
    rows.append(("sample, T steps (full)", full))
    resp = _run(_sampling, args.checkpoint, args.threads, args.n_respaced, args.respaced_steps)
    rows.append((f"sample, {args.respaced_steps} steps (respaced)", resp))
    train = _run(_train_step, args.checkpoint, args.threads, args.batch_size, 10)
    rows.append((f"train step, batch {args.batch_size}", train))

    print(f"{'measurement':<32} {'result':>22} {'peak RSS (MiB)':>15}")
    print("-" * 71)
    for name, r in rows:
        if "crystals_per_s" in r:
            res = f"{r['crystals_per_s']:.3f} crystals/s"
        else:
            res = f"{r['median_s'] * 1000:.0f} ms/step"
        print(f"{name:<32} {res:>22} {r['peak_rss_mib']:>15.0f}")

    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": mp.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "checkpoint": str(resolve_checkpoint(args.checkpoint)),
        "checkpoint_info": checkpoint_info(args.checkpoint),
        "sample_full": full,
        "sample_respaced": resp,
        "train_step": train,
        "command": "python benchmarks/prior_speed.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"prior_speed_{resolve_checkpoint(args.checkpoint).name}_{args.threads}threads.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
