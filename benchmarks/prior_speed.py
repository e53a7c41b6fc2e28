"""Prior speed: sampling crystals/s (full T and respaced), training-step time, peak memory; and
training throughput in crystals/s (``--train-throughput``) on the CPU or, when present, CUDA.

Each measurement runs in a fresh process so that its peak memory is its own.

    python benchmarks/prior_speed.py [--checkpoint DIR] [--threads 2]
    python benchmarks/prior_speed.py --train-throughput [--batch-sizes 64 256 1024] [--amp none bf16] \
        [--tf32] [--compile] [--loop legacy packed] [--steps 20] [--threads 1] [--note TEXT]

The first prints a table and writes benchmarks/results/prior_speed_<checkpoint>_<threads>threads.json;
the second times the training step of ``matinvent pretrain`` (``train.TrainStep`` on packed batches;
``--loop legacy`` adds the loop as it was before: per-step collation from records, a loss ``.item()``
per step, a per-parameter EMA) for mp20_small-sized models (configs/compare_types_{masked,gaussian}.yaml)
and writes benchmarks/results/train_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mp_20" / "val.csv.gz"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "mp20_sample.csv"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sampling(checkpoint: str | None, threads: int, n: int, steps: int | None) -> dict:
    import torch

    from matinvent.prior.checkpoint import load_prior

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

    from matinvent.crystal.batch import CrystalBatch
    from matinvent.io.cdvae_csv import read_cdvae_csv
    from matinvent.prior.checkpoint import load_prior

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


ROOT = Path(__file__).resolve().parents[1]
TYPE_CONFIGS = {t: ROOT / "configs" / f"compare_types_{t}.yaml" for t in ("masked", "gaussian")}
CACHE = ROOT / "runs" / "compare_gaussian" / "cache" / "train_crystals.npz"


def _training_crystals(limit: int) -> tuple[list, str]:
    """The packed MP-20 training set when cached here, else the first rows of val.csv.gz, else the fixture."""
    from matinvent.io.cdvae_csv import load_arrays, read_cdvae_csv

    if CACHE.exists():
        return load_arrays(CACHE), str(CACHE.relative_to(ROOT))
    src = DATA if DATA.exists() else FIXTURE
    return read_cdvae_csv(src, limit=limit, max_atoms=20).crystals, str(src)


def _throughput(spec: dict) -> dict:
    """Crystals/s of ``spec['steps']`` training steps after ``spec['warmup']`` untimed ones (compile included there)."""
    import copy

    import torch

    from matinvent.crystal.batch import CrystalBatch
    from matinvent.io.packed import PackedCrystals
    from matinvent.prior.model import CrystalDiffusion
    from matinvent.prior.pretrain import RunningLoss, TrainStep, _lr_at, natoms_histogram
    from matinvent.prior.pretrain_config import load_pretrain_config

    torch.set_num_threads(spec["threads"])
    dev, bs = spec["device"], spec["batch_size"]
    cuda = dev.startswith("cuda")
    if spec["tf32"]:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = load_pretrain_config(TYPE_CONFIGS[spec["type_diffusion"]])
    cfg.train.batch_size, cfg.train.device = bs, dev
    cfg.train.amp, cfg.train.compile = spec["amp"], spec["compile"]
    crystals, source = _training_crystals(max(2 * bs, 256))
    torch.manual_seed(0)
    model = CrystalDiffusion(cfg.model, cfg.diffusion)
    model.set_natoms_histogram(natoms_histogram(crystals, cfg.diffusion.max_atoms))
    model.to(dev).train()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(0)
    n = len(crystals)
    state = {"perm": torch.randperm(n, generator=gen), "pos": 0}
    if spec["loop"] == "packed":
        packed = PackedCrystals.from_crystals(crystals).to(dev)
        train_step, running = TrainStep(model, ema, opt, cfg), RunningLoss()
        state["perm_dev"] = state["perm"].to(dev)

    def indices() -> slice:
        if state["pos"] + bs > n:
            state["perm"], state["pos"] = torch.randperm(n, generator=gen), 0
            if spec["loop"] == "packed":
                state["perm_dev"] = state["perm"].to(dev)
        state["pos"] += bs
        return slice(state["pos"] - bs, state["pos"])

    def packed_step(i: int) -> None:
        sl = indices()
        running.update(train_step(packed.gather(state["perm_dev"][sl], idx_host=state["perm"][sl]), i, gen))

    legacy_running = [0.0]

    def legacy_step(i: int) -> None:  # the loop of train.py before packing (one .item() per step)
        batch = CrystalBatch.from_crystals([crystals[j] for j in state["perm"][indices()].tolist()]).to(dev)
        for g in opt.param_groups:
            g["lr"] = _lr_at(i, cfg)
        losses = model.loss(batch, generator=gen)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        with torch.no_grad():
            d = cfg.train.ema_decay if i >= cfg.train.warmup_steps else 0.0
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        legacy_running[0] = 0.98 * legacy_running[0] + 0.02 * losses["loss"].item()

    one = packed_step if spec["loop"] == "packed" else legacy_step

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out = {**spec, "data": source, "train_crystals": n}
    try:
        t0 = time.perf_counter()
        for i in range(spec["warmup"]):
            one(i)
        sync()
        out["warmup_s"] = time.perf_counter() - t0
        chunk = 5 if cuda else 1  # steps between timestamps (a sync on CUDA)
        chunks, t_start = [], time.perf_counter()
        for c0 in range(spec["warmup"], spec["warmup"] + spec["steps"], chunk):
            t0 = time.perf_counter()
            for i in range(c0, min(c0 + chunk, spec["warmup"] + spec["steps"])):
                one(i)
            sync()
            chunks.append((i + 1 - c0, time.perf_counter() - t0))
        dt = time.perf_counter() - t_start
    except Exception as exc:  # e.g. torch.compile without a working compiler toolchain
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        return out
    per_step = sorted(t / k for k, t in chunks)
    out.update(
        seconds=dt,
        ms_per_step=1e3 * dt / spec["steps"],
        crystals_per_s=spec["steps"] * min(bs, n) / dt,
        median_ms_per_step=1e3 * per_step[len(per_step) // 2],
        crystals_per_s_median=min(bs, n) / per_step[len(per_step) // 2],
        mean_atoms=float(sum(c.num_atoms for c in crystals) / n),
        peak_rss_mib=_peak_mib(),
    )
    if cuda:
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _table_row(r: dict) -> str:
    res = f"failed: {r.get('error')}"
    if "error" not in r:
        res = f"{r['crystals_per_s']:10.1f} {r['ms_per_step']:9.1f} {r['crystals_per_s_median']:12.1f}"
    return f"{r['type_diffusion']:<9} {r['batch_size']:>6} {r['loop']:<7} {r['amp']:<5} {str(r['compile']):<7} {res}"


def compile_speedups(rows: list[dict]) -> list[str]:
    """Set ``speedup_vs_eager`` on each compiled row against the latest eager row before it with the same
    types, batch and amp (the same repeat); returns one line per compiled row."""
    lines = []
    for i, r in enumerate(rows):
        if not r["compile"]:
            continue
        key = tuple(r[k] for k in ("type_diffusion", "batch_size", "amp"))
        eager = [e for e in rows[:i] if e["loop"] == "packed" and not e["compile"] and "error" not in e
                 and tuple(e[k] for k in ("type_diffusion", "batch_size", "amp")) == key]  # fmt: skip
        where = f"({r['type_diffusion']}, batch {r['batch_size']}, amp {r['amp']})"
        if "error" in r:
            lines.append(f"compile FAILED {where}: {r['error']}")
        elif eager:
            r["speedup_vs_eager"] = r["crystals_per_s"] / eager[-1]["crystals_per_s"]
            verdict = "faster" if r["speedup_vs_eager"] > 1 else "SLOWER"
            lines.append(f"compile {verdict} than eager: {r['speedup_vs_eager']:.2f}x {where}")
    return lines


def train_throughput(args: argparse.Namespace) -> None:
    """Run every combination of the throughput options in fresh processes; print a table, write JSON."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    sizes = args.batch_sizes or ([64, 256, 1024] if cuda else [64])
    amps = args.amp if cuda else [a for a in args.amp if a == "none"] or ["none"]
    compiles = [False, True] if args.compile else [False]
    base = {"device": device, "threads": args.threads, "steps": args.steps, "warmup": args.warmup, "tf32": args.tf32}
    specs = []
    for td in args.type_diffusion:
        for bs in sizes:
            if "legacy" in args.loop:
                specs.append({**base, "type_diffusion": td, "batch_size": bs, "loop": "legacy", "amp": "none",
                              "compile": False})  # fmt: skip
            if "packed" in args.loop:
                for amp in amps:
                    for comp in compiles:
                        specs.append({**base, "type_diffusion": td, "batch_size": bs, "loop": "packed", "amp": amp,
                                      "compile": comp})  # fmt: skip
    load_before = os.getloadavg()
    rows = []
    for spec in specs * args.repeats:
        rows.append(_run(_throughput, spec))
        print(_table_row(rows[-1]), flush=True)
    head = ("types", "batch", "loop", "amp", "compile", "crystals/s", "ms/step", "median c/s")
    print("\n{:<9} {:>6} {:<7} {:<5} {:<7} {:>10} {:>9} {:>12}".format(*head))
    print("-" * 71)
    for r in rows:
        print(_table_row(r))
    for line in compile_speedups(rows):
        print(line)
    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": mp.cpu_count(),
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "threads": args.threads,
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "note": args.note,
        },
        "model": "mp20_small size (6 x 128, 16 frequencies, T = 1000): configs/compare_types_<types>.yaml",
        "results": rows,
        "command": "python benchmarks/prior_speed.py --train-throughput " + shlex.join(args.argv),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (args.out or f"train_throughput_{'cuda' if cuda else 'cpu'}.json")
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


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
    ap.add_argument("--train-throughput", action="store_true", help="only the training-throughput table")
    ap.add_argument("--device", help="throughput: cpu or cuda (default: cuda when available)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", help="throughput (default: 64 on CPU, 64 256 1024 on CUDA)")
    ap.add_argument("--type-diffusion", nargs="+", default=["masked", "gaussian"], choices=["masked", "gaussian"])
    ap.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=["none", "bf16"], help="bf16: CUDA only")
    ap.add_argument("--tf32", action="store_true", help="TF32 matmuls (CUDA)")
    ap.add_argument("--compile", action="store_true", help="also measure with train.compile (torch.compile)")
    ap.add_argument("--loop", nargs="+", default=["legacy", "packed"], choices=["legacy", "packed"])
    ap.add_argument("--steps", type=int, default=20, help="timed throughput steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed throughput steps first (compilation happens here)")
    ap.add_argument("--repeats", type=int, default=1, help="throughput: run the whole set this many times, interleaved")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else ran on the machine)")
    ap.add_argument("--out", help="throughput JSON file name under benchmarks/results/")
    args = ap.parse_args()
    if args.train_throughput:
        args.argv = [a for a in sys.argv[1:] if a != "--train-throughput"]
        train_throughput(args)
        return

    import torch

    from matinvent.prior.checkpoint import checkpoint_info, resolve_checkpoint

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
