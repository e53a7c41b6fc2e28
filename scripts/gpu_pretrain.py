"""Train priors on a lent GPU inside a fixed wall-time budget, then sample from them there.

One prepared run for a short GPU lease: each config in ``--configs`` trains in its own process
(concurrently, on the same GPU). Each process first times the training step of ``matinvent
pretrain`` itself (``train.TrainStep`` on the packed training set on the device; with
``train.compile`` it times the compiled and the eager step and keeps the faster, or eager when
compilation fails), then sets ``train.max_steps``: ``--epochs`` passes over the training set
when the budget allows it, otherwise as many steps as fit (and says how many epochs that is and
what throughput the epochs would have needed), so that the cosine schedule ends inside the
budget. Then it draws ``--n`` crystals (seed 0, ``--steps`` respaced steps) and packs checkpoint
+ history + samples + ``gpu_run.json`` into ``OUT/<name>.tar`` so that evaluation (which needs
pymatgen/SMACT) runs back on the CPU machine.

    python scripts/gpu_pretrain.py --out $OUT --budget-s 570 --sample-reserve-s 15 --epochs 1000 \\
        --cache runs/compare_gaussian/cache configs/prior_mp20_masked_gpu.yaml

Without CUDA it runs on the CPU (eager, float32): a smoke test of the script, not of its speed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

SAMPLE_RESERVE_S = 45.0  # default; sampling 1,000 crystals at 100 steps took 3-6 s on the H200, plus packing
SAFETY = 0.9  # fraction of the remaining budget planned for training steps (validation, checkpoints)


def calibrate(cfg, train: list, steps: int = 20, warmup: int = 5) -> dict:
    """Steady-state seconds per optimiser step of ``cfg`` on its device, and the seconds of the
    first ``warmup`` steps (where compilation happens), with the training loop's own code."""
    from matinvent.io.packed import PackedCrystals
    from matinvent.prior.model import CrystalDiffusion
    from matinvent.prior.pretrain import TrainStep

    dev = cfg.train.device
    cuda = dev.startswith("cuda")
    model = CrystalDiffusion(copy.deepcopy(cfg.model), copy.deepcopy(cfg.diffusion)).to(dev).train()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    step_fn = TrainStep(model, ema, opt, cfg)
    packed = PackedCrystals.from_crystals(train).to(dev)
    gen = torch.Generator().manual_seed(123)
    bs = cfg.train.batch_size
    perm = torch.randperm(len(train), generator=gen)
    perm_dev = perm.to(dev)

    def run(first: int, count: int) -> float:
        t0 = time.perf_counter()
        for i in range(first, first + count):
            lo = (i * bs) % max(1, len(train) - bs + 1)
            step_fn(packed.gather(perm_dev[lo : lo + bs], idx_host=perm[lo : lo + bs]), i, gen)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    warm_s = run(0, warmup)
    step_s = run(warmup, steps) / steps
    out = {"step_s": step_s, "warmup_s": warm_s, "crystals_per_s": bs / step_s, "compile": cfg.train.compile}
    if cuda:
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def choose_step(cfg, train: list) -> tuple[dict, dict]:
    """Calibrate ``cfg``; with ``train.compile`` also eager, keeping the faster (eager if compiling fails).
    Sets ``cfg.train.compile`` accordingly; returns (the chosen calibration, all calibrations)."""
    runs: dict[str, dict] = {}
    if cfg.train.compile:
        try:
            runs["compiled"] = calibrate(cfg, train)
        except Exception as exc:  # no working compiler toolchain, an unsupported op, ...
            runs["compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        eager = copy.deepcopy(cfg)
        eager.train.compile = False
        runs["eager"] = calibrate(eager, train)
        comp = runs["compiled"]
        cfg.train.compile = "error" not in comp and comp["step_s"] < runs["eager"]["step_s"]
        return runs["compiled" if cfg.train.compile else "eager"], runs
    runs["eager"] = calibrate(cfg, train)
    return runs["eager"], runs


def plan_steps(cfg, n_train: int, step: dict, left_s: float, epochs: float | None) -> dict:
    """``train.max_steps`` for ``epochs`` passes (or the config's max_steps), capped by what fits in ``left_s``."""
    bs = cfg.train.batch_size
    wanted = math.ceil(epochs * n_train / bs) if epochs else cfg.train.max_steps
    # pretrain compiles its own model again; in-process caches make that a fraction of the first
    # compile (on the CPU: 34 s for the calibration, under 3 s in pretrain), so a quarter is kept
    overhead = 0.25 * step["warmup_s"] if cfg.train.compile else 0.0
    fit = int(SAFETY * max(0.0, left_s - overhead) / step["step_s"])
    max_steps = min(wanted, max(cfg.train.warmup_steps + 10, fit))
    plan = {
        "wanted_steps": wanted,
        "fitting_steps": fit,
        "max_steps": max_steps,
        "epochs": max_steps * bs / n_train,
        "calibrated_crystals_per_s": step["crystals_per_s"],
    }
    if epochs:
        plan["needed_crystals_per_s"] = epochs * n_train / max(1e-9, SAFETY * (left_s - overhead))
    return plan


def train_one(
    config: Path,
    out: Path,
    cache: Path,
    work_root: Path,
    deadline: float,
    n: int,
    steps: int,
    epochs: float | None,
    sample_reserve_s: float = SAMPLE_RESERVE_S,
) -> None:
    """Calibrate, train and sample one config; packs ``out/<config name>.tar``."""
    import numpy as np

    from matinvent.io.cdvae_csv import load_arrays
    from matinvent.prior.checkpoint import load_prior
    from matinvent.prior.pretrain import pretrain
    from matinvent.prior.pretrain_config import load_pretrain_config

    t_start = time.time()
    name = config.stem
    work = work_root / f"gpu_{name}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "cache").mkdir(parents=True)
    for f in ("train_crystals.npz", "val_crystals.npz"):
        shutil.copy(cache / f, work / "cache" / f)
    cfg = load_pretrain_config(config)
    cuda = torch.cuda.is_available()
    if not cuda:
        cfg.train.device, cfg.train.amp, cfg.train.compile = "cpu", "none", False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(cfg.train.threads or 4)
    train = load_arrays(work / "cache" / "train_crystals.npz")
    step, calibrations = choose_step(cfg, train)
    left = deadline - time.time() - sample_reserve_s
    plan = plan_steps(cfg, len(train), step, left, epochs)
    cfg.train.max_steps = plan["max_steps"]
    cfg.train.ckpt_every = min(cfg.train.ckpt_every, cfg.train.max_steps)
    cfg.train.val_every = min(cfg.train.val_every, cfg.train.max_steps)
    print(
        f"[{name}] {step['step_s'] * 1e3:.1f} ms/step = {step['crystals_per_s']:.0f} crystals/s "
        f"(compile {cfg.train.compile}, amp {cfg.train.amp}) -> max_steps {cfg.train.max_steps} "
        f"= {plan['epochs']:.0f} epochs ({left:.0f} s left)",
        flush=True,
    )
    if epochs and plan["max_steps"] < plan["wanted_steps"]:
        print(
            f"[{name}] WARNING: {epochs:g} epochs need {plan['needed_crystals_per_s']:.0f} crystals/s; the budget "
            f"allows {plan['epochs']:.0f} epochs at the calibrated speed",
            flush=True,
        )
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
    if cuda:
        torch.cuda.synchronize()
    sample_s = time.time() - t0
    np.savez(ckpt / "samples.npz", **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    info = {
        "config": str(config),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "tf32": cuda,
        "amp": cfg.train.amp,
        "compile": cfg.train.compile,
        "batch_size": cfg.train.batch_size,
        "train_crystals": len(train),
        "calibrations": calibrations,
        "calibrated_ms_per_step": step["step_s"] * 1e3,
        **plan,
        "train_s": train_s,
        "achieved_crystals_per_s": cfg.train.max_steps * cfg.train.batch_size / train_s,
        "sample_n": n,
        "sample_steps": steps,
        "sample_s": sample_s,
        "total_s": time.time() - t_start,
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
    ap.add_argument("--epochs", type=float, default=None, help="passes over the training set (default: max_steps)")
    ap.add_argument("--work", type=Path, default=Path("runs"), help="folder for the training runs")
    ap.add_argument("--sample-reserve-s", type=float, default=SAMPLE_RESERVE_S, help="budget kept for sampling")
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.deadline is not None:  # child: one config
        train_one(
            args.configs[0], args.out, args.cache, args.work, args.deadline, args.n, args.steps, args.epochs,
            args.sample_reserve_s,
        )  # fmt: skip
        return
    deadline = time.time() + args.budget_s
    extra = ["--sample-reserve-s", str(args.sample_reserve_s)] + (["--epochs", str(args.epochs)] if args.epochs else [])
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(c), "--out", str(args.out), "--cache", str(args.cache)]
            + ["--work", str(args.work), "--deadline", str(deadline), "--n", str(args.n), "--steps", str(args.steps)]
            + extra
        )
        for c in args.configs
    ]
    codes = [p.wait() for p in procs]
    print("exit codes:", codes)
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
