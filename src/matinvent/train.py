"""Pretraining of the crystal diffusion prior: resumable, seedable, CPU or CUDA."""

from __future__ import annotations

import copy
import csv
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from matinvent.batch import CrystalBatch
from matinvent.checkpoint import load_prior, save_prior
from matinvent.config import ConfigError, PretrainConfig, to_dict
from matinvent.crystal import Crystal
from matinvent.crystal_diffusion import CrystalDiffusion
from matinvent.datasets import load_arrays, read_cdvae_csv, save_arrays

STATE = "trainer_state.pt"


def load_training_data(
    data_dir: str | Path, cfg: PretrainConfig, cache_dir: Path
) -> tuple[list[Crystal], list[Crystal]]:
    """Train/validation crystals from the CSVs in ``data_dir``; parsed once, cached as npz."""
    data_dir = Path(data_dir)
    train_cache, val_cache = cache_dir / "train_crystals.npz", cache_dir / "val_crystals.npz"
    if train_cache.exists() and val_cache.exists():
        return load_arrays(train_cache), load_arrays(val_cache)
    train_files = sorted(data_dir.glob(cfg.data.train_glob))
    val_files = sorted(data_dir.glob(cfg.data.val_glob))
    if not train_files:
        raise FileNotFoundError(f"no training files matching '{cfg.data.train_glob}' in {data_dir}")
    train = [c for f in train_files for c in read_cdvae_csv(f, max_atoms=cfg.data.max_atoms).crystals]
    val_all = [c for f in val_files for c in read_cdvae_csv(f, max_atoms=cfg.data.max_atoms).crystals]
    rng = random.Random(cfg.train.seed)
    order = list(range(len(val_all)))
    rng.shuffle(order)
    val = [val_all[i] for i in order[: cfg.data.val_size]]
    if cfg.data.use_rest_of_val_for_training:
        train += [val_all[i] for i in order[cfg.data.val_size :]]
    if not val:  # no validation file: hold out a slice of train
        val, train = train[: cfg.data.val_size], train[cfg.data.val_size :]
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_arrays(train, train_cache)
    save_arrays(val, val_cache)
    return train, val


def _init_weights(model: CrystalDiffusion, checkpoint_dir: str | Path) -> None:
    """Copy a prior's weights into ``model``; its architecture must match the config being trained."""
    start = load_prior(checkpoint_dir)
    if start.denoiser_config != model.denoiser_config or start.config.timesteps != model.config.timesteps:
        raise ConfigError(
            f"train.init_from: {checkpoint_dir} was built with model {start.denoiser_config} and "
            f"{start.config.timesteps} timesteps; the config asks for {model.denoiser_config} and "
            f"{model.config.timesteps}"
        )
    hist = model.natoms_prob.clone()
    state = start.state_dict()
    if model.masked_types and not start.masked_types:
        state = _add_mask_column(state, model.state_dict())
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"train.init_from: {checkpoint_dir} does not fit the configured model: {exc}") from exc
    model.natoms_prob.copy_(hist)  # the histogram comes from this run's training data


def _add_mask_column(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Gaussian-type prior's weights for a masked-type model: the type-input layers gain a
    zero column for the mask state; everything else is copied unchanged."""
    out = dict(state)
    for key in ("denoiser.type_embed.weight", "denoiser.comp_embed.weight"):
        if key in state and key in target and target[key].shape[1] == state[key].shape[1] + 1:
            w = torch.zeros_like(target[key])
            w[:, :-1] = state[key]
            out[key] = w
    return out


def natoms_histogram(crystals: list[Crystal], max_atoms: int) -> torch.Tensor:
    counts = np.bincount([c.num_atoms for c in crystals], minlength=max_atoms + 1)[: max_atoms + 1]
    return torch.from_numpy(counts.astype(np.float64))


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
    return t.lr_min + 0.5 * (t.lr - t.lr_min) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def validation_loss(
    model: CrystalDiffusion, val: list[Crystal], batch_size: int, device: str, seed: int = 1234
) -> dict:
    """Mean loss over the validation crystals with fixed noise (comparable across steps)."""
    gen = torch.Generator().manual_seed(seed)
    totals: dict[str, float] = {}
    n = 0
    for i in range(0, len(val), batch_size):
        chunk = val[i : i + batch_size]
        losses = model.loss(CrystalBatch.from_crystals(chunk).to(device), generator=gen)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(chunk)
        n += len(chunk)
    return {k: v / n for k, v in totals.items()}


def pretrain(data_dir: str | Path, cfg: PretrainConfig, out_dir: str | Path, resume: bool = False) -> Path:
    """Train a prior; writes ``out_dir/checkpoint`` (EMA weights), ``trainer_state.pt``, ``history.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE
    if state_path.exists() and not resume:
        raise FileExistsError(f"{out} already holds a training run; pass --resume to continue it")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = cfg.train.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is '{device}' but CUDA is not available")
    train, val = load_training_data(data_dir, cfg, out / "cache")
    torch.manual_seed(cfg.train.seed)
    model = CrystalDiffusion(cfg.model, cfg.diffusion)
    model.set_natoms_histogram(natoms_histogram(train, cfg.diffusion.max_atoms))
    if cfg.train.init_from and not (resume and state_path.exists()):
        _init_weights(model, cfg.train.init_from)
    model.to(device)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    step, history = 0, []
    n = len(train)
    perm, pos = torch.randperm(n, generator=gen), 0
    if resume and state_path.exists():
        st = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optim"])
        gen.set_state(st["generator"])
        step, history = int(st["step"]), list(st["history"])
        perm, pos = st["perm"], int(st["pos"])
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))

    def save(final: bool = False) -> None:
        tmp = out / (STATE + ".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optim": opt.state_dict(),
                "generator": gen.get_state(),
                "step": step,
                "history": history,
                "perm": perm,
                "pos": pos,
            },
            tmp,
        )
        tmp.replace(state_path)
        info = {
            "steps": step,
            "train_crystals": len(train),
            "val_crystals": len(val),
            "val_loss": history[-1]["val_loss"] if history else None,
            "final": final,
        }
        save_prior(ema, out / "checkpoint", info)
        with open(out / "history.csv", "w", newline="") as fh:
            if history:
                fields = list(dict.fromkeys(k for row in history for k in row))
                w = csv.DictWriter(fh, fieldnames=fields, restval="")
                w.writeheader()
                w.writerows(history)

    bar = tqdm(total=cfg.train.max_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    running, t0, first = 0.0, time.time(), True
    model.train()
    while step < cfg.train.max_steps:
        if pos + cfg.train.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + cfg.train.batch_size].tolist()
        batch = CrystalBatch.from_crystals([train[i] for i in idx]).to(device)
        pos += cfg.train.batch_size
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        losses = model.loss(batch, generator=gen)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        with torch.no_grad():
            d = cfg.train.ema_decay if step >= cfg.train.warmup_steps else 0.0
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        step += 1
        running = losses["loss"].item() if first else 0.98 * running + 0.02 * losses["loss"].item()
        first = False
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}")
        if step % cfg.train.val_every == 0 or step == cfg.train.max_steps:
            vl = validation_loss(ema, val, cfg.train.batch_size, device)
            history.append(
                {
                    "step": step,
                    "train_loss": running,
                    "val_loss": vl["loss"],
                    "val_lattice": vl["loss_lattice"],
                    "val_coord": vl["loss_coord"],
                    "val_type": vl["loss_type"],
                    "val_type_ce": vl.get("loss_type_ce", float("nan")),
                    "lr": _lr_at(step - 1, cfg),
                    "elapsed_s": time.time() - t0,
                }
            )
            bar.write(
                f"step {step}: train {running:.4f}  val {vl['loss']:.4f} "
                f"(L {vl['loss_lattice']:.3f} F {vl['loss_coord']:.3f} A {vl['loss_type']:.4f} "
                f"A-CE {vl.get('loss_type_ce', float('nan')):.3f})"
            )
        if step % cfg.train.ckpt_every == 0 or step == cfg.train.max_steps:
            save(final=step == cfg.train.max_steps)
    bar.close()
    plot_history(out / "history.csv", out / "checkpoint" / "training_curve.png")
    return out / "checkpoint"


def plot_history(history_csv: str | Path, png: str | Path) -> bool:
    """Training/validation loss curves as a PNG; returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    with open(history_csv) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return False
    step = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].plot(step, [float(r["train_loss"]) for r in rows], label="train (running)")
    axes[0].plot(step, [float(r["val_loss"]) for r in rows], label="validation (EMA weights)")
    axes[0].set_yscale("log")
    axes[0].set_title("total loss")
    for key in ("val_lattice", "val_coord", "val_type", "val_type_ce"):
        pts = [(s, float(r[key])) for s, r in zip(step, rows, strict=True) if r.get(key) not in (None, "", "nan")]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), label=key.removeprefix("val_"))
    axes[1].set_yscale("log")
    axes[1].set_title("validation loss terms (unweighted)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True
