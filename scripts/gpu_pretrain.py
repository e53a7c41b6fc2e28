"""Train priors on a lent GPU inside a fixed wall-time budget, then sample from them there.

One prepared run for a short GPU lease: each config in ``--configs`` trains in its own process
(concurrently, on the same GPU). Each process times a few training steps first and sets
``train.max_steps`` so that the cosine schedule ends inside the budget; then it draws ``--n``
crystals (seed 0, ``--steps`` respaced steps) and packs checkpoint + history + samples into
``OUT/<name>.tar`` so that evaluation (which needs pymatgen/SMACT) runs back on the CPU machine.

    python scripts/gpu_pretrain.py --out $OUT --budget-s 380 --cache runs/prior_mp20_small/cache \
        configs/prior_mp20_small_gpu.yaml configs/prior_mp20_base_gpu.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch


def calibrate(cfg, train, steps: int = 30) -> float:
    """Seconds per optimiser step of ``cfg``'s model and batch size on its device."""
    from matinvent.batch import CrystalBatch
    from matinvent.crystal_diffusion import CrystalDiffusion

    model = CrystalDiffusion(copy.deepcopy(cfg.model), copy.deepcopy(cfg.diffusion)).to(cfg.train.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(123)
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        idx = rng.choice(len(train), cfg.train.batch_size, replace=False)
        batch = CrystalBatch.from_crystals([train[j] for j in idx]).to(cfg.train.device)
        loss = model.loss(batch, generator=gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cfg.train.device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def train_one(config: Path, out: Path, cache: Path, deadline: float, n: int, steps: int) -> None:
    from matinvent.checkpoint import load_prior
    from matinvent.config import load_pretrain_config
    from matinvent.datasets import load_arrays
    from matinvent.train import pretrain

    name = config.stem
    work = Path("runs") / f"gpu_{name}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "cache").mkdir(parents=True)
    for f in ("train_crystals.npz", "val_crystals.npz"):
        shutil.copy(cache / f, work / "cache" / f)
    cfg = load_pretrain_config(config)
    if not torch.cuda.is_available():
        cfg.train.device = "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_num_threads(cfg.train.threads or 4)
    train = load_arrays(work / "cache" / "train_crystals.npz")
    step_s = calibrate(cfg, train)
    sample_reserve = 45.0
    left = deadline - time.time() - sample_reserve
    max_steps = max(cfg.train.warmup_steps + 10, int(0.85 * left / step_s))
    cfg.train.max_steps = min(cfg.train.max_steps, max_steps)
    cfg.train.ckpt_every = min(cfg.train.ckpt_every, cfg.train.max_steps)
    cfg.train.val_every = min(cfg.train.val_every, cfg.train.max_steps)
    print(f"[{name}] {step_s * 1e3:.1f} ms/step -> max_steps {cfg.train.max_steps} ({left:.0f} s left)", flush=True)
    t0 = time.time()
    ckpt = pretrain("unused", cfg, work)
    train_s = time.time() - t0
    model = load_prior(ckpt, device=cfg.train.device)
    gen = torch.Generator().manual_seed(0)
    parts = []
    t0 = time.time()
    for start in range(0, n, 500):
        traj = model.sample(min(500, n - start), generator=gen, steps=steps)
        b = traj.final
        parts.append({k: getattr(b, k).detach().cpu().numpy() for k in ("Z", "F", "L", "num_atoms")})
    if cfg.train.device.startswith("cuda"):
        torch.cuda.synchronize()
    sample_s = time.time() - t0
    np.savez(ckpt / "samples.npz", **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    info = {
        "config": str(config),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "calibrated_ms_per_step": step_s * 1e3,
        "max_steps": cfg.train.max_steps,
        "train_s": train_s,
        "sample_n": n,
        "sample_steps": steps,
        "sample_s": sample_s,
        "params": sum(p.numel() for p in model.parameters()),
    }
    (ckpt / "gpu_run.json").write_text(json.dumps(info, indent=2))
    with tarfile.open(out / f"{name}.tar", "w") as tar:
        tar.add(ckpt, arcname=name)
    print(f"[{name}] done: {json.dumps(info)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="folder with train_crystals.npz / val_crystals.npz")
    ap.add_argument("--budget-s", type=float, default=380.0, help="wall time for training + sampling")
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.deadline is not None:  # child: one config
        train_one(args.configs[0], args.out, args.cache, args.deadline, args.n, args.steps)
        return
    deadline = time.time() + args.budget_s
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(c), "--out", str(args.out), "--cache", str(args.cache)]
            + ["--deadline", str(deadline), "--n", str(args.n), "--steps", str(args.steps)]
        )
        for c in args.configs
    ]
    codes = [p.wait() for p in procs]
    print("exit codes:", codes)
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
