"""Pretraining of the crystal diffusion prior: resumable, seedable, CPU or CUDA.

The training set is packed once into flat tensors on the training device and batches are gathered
by index (:mod:`matinvent.io.packed`); one step (``TrainStep``) reads nothing back to the host, and the
running loss is read every ``LOG_EVERY`` steps and at validation. Optional: ``train.amp: bf16``
(autocast forward) and ``train.compile`` (compiled message-passing layers). With the defaults the
results are those of the plain per-step loop, bit for bit (same RNG draws in the same order).
"""

from __future__ import annotations

import contextlib
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

from matinvent.config_io import ConfigError, to_dict
from matinvent.crystal.batch import CrystalBatch
from matinvent.crystal.record import Crystal
from matinvent.io.cdvae_csv import load_arrays, read_cdvae_csv, save_arrays
from matinvent.io.packed import PackedCrystals
from matinvent.prior.checkpoint import load_prior, save_prior
from matinvent.prior.model import CrystalDiffusion
from matinvent.prior.pretrain_config import PretrainConfig, validate_pretrain

STATE = "trainer_state.pt"
LOG_EVERY = 50  # steps between reads of the running loss for the progress bar (a host sync on a GPU)


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
    model: CrystalDiffusion,
    val: list[Crystal] | PackedCrystals,
    batch_size: int,
    device: str,
    seed: int = 1234,
) -> dict:
    """Mean loss over the validation crystals with fixed noise (comparable across steps)."""
    if not isinstance(val, PackedCrystals):
        val = PackedCrystals.from_crystals(val)
    val = val.to(device)
    gen = torch.Generator().manual_seed(seed)
    totals: dict[str, float] = {}
    n = 0
    for i in range(0, len(val), batch_size):
        chunk = val.slice(i, i + batch_size)
        losses = model.loss(chunk, generator=gen)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v) * chunk.num_graphs
        n += chunk.num_graphs
    return {k: v / n for k, v in totals.items()}


def compile_denoiser(model: CrystalDiffusion) -> None:
    """``torch.compile`` each message-passing layer in place (state-dict keys unchanged).

    The layers hold nearly all of the work (per-edge MLPs); the edge-list construction around them
    reads sizes from the data and stays eager. Shapes vary per batch, hence ``dynamic=True``.
    """
    for layer in model.denoiser.layers:
        layer.compile(dynamic=True)


class TrainStep:
    """One optimiser step of pretraining: learning rate, loss (bf16 autocast with ``train.amp``),
    backward, gradient clipping, Adam and the EMA update, without reading anything back to the host."""

    def __init__(
        self, model: CrystalDiffusion, ema: CrystalDiffusion, opt: torch.optim.Optimizer, cfg: PretrainConfig
    ) -> None:
        self.model, self.opt, self.cfg = model, opt, cfg
        self.params = list(model.parameters())
        self.param_values = [p.detach() for p in self.params]  # views: they follow the optimiser's updates
        self.ema_params = list(ema.parameters())
        self.device_type = torch.device(cfg.train.device).type
        if cfg.train.compile:
            compile_denoiser(model)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.train.amp == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, batch: CrystalBatch, step: int, generator: torch.Generator) -> torch.Tensor:
        """Train on ``batch`` at optimiser step ``step`` (0-based); returns the detached total loss."""
        t = self.cfg.train
        for g in self.opt.param_groups:
            g["lr"] = _lr_at(step, self.cfg)
        with self.autocast():
            loss = self.model.loss(batch, generator=generator)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        self.opt.step()
        with torch.no_grad():
            d = t.ema_decay if step >= t.warmup_steps else 0.0
            torch._foreach_mul_(self.ema_params, d)
            torch._foreach_add_(self.ema_params, self.param_values, alpha=1 - d)
        return loss.detach()


class RunningLoss:
    """Exponential moving average (0.98 / 0.02) of the training loss, kept on the loss's device;
    ``value()`` reads it (the only host sync), in float64 as a Python float would be."""

    def __init__(self) -> None:
        self._value: torch.Tensor | None = None

    def update(self, loss: torch.Tensor) -> None:
        x = loss.detach().double()
        self._value = x if self._value is None else self._value * 0.98 + x * 0.02

    def value(self) -> float:
        return 0.0 if self._value is None else float(self._value)


def pretrain(data_dir: str | Path, cfg: PretrainConfig, out_dir: str | Path, resume: bool = False) -> Path:
    """Train a prior; writes ``out_dir/checkpoint`` (EMA weights), ``trainer_state.pt``, ``history.csv``."""
    validate_pretrain(cfg)  # also catches values set after loading (CLI overrides, Python callers)
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
        st = torch.load(state_path, map_location="cpu", weights_only=True)  # generator state must stay on CPU
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optim"])
        gen.set_state(st["generator"])
        step, history = int(st["step"]), list(st["history"])
        perm, pos = st["perm"], int(st["pos"])
    train_set = PackedCrystals.from_crystals(train).to(device)
    val_set = PackedCrystals.from_crystals(val).to(device)
    train_step = TrainStep(model, ema, opt, cfg)
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
    running, t0 = RunningLoss(), time.time()
    bs = cfg.train.batch_size
    perm_dev = perm.to(device)
    model.train()
    while step < cfg.train.max_steps:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
            perm_dev = perm.to(device)
        batch = train_set.gather(perm_dev[pos : pos + bs], idx_host=perm[pos : pos + bs])
        pos += bs
        running.update(train_step(batch, step, gen))
        step += 1
        bar.update(1)
        if step % LOG_EVERY == 0:
            bar.set_postfix(loss=f"{running.value():.3f}")
        if step % cfg.train.val_every == 0 or step == cfg.train.max_steps:
            vl = validation_loss(ema, val_set, cfg.train.batch_size, device)
            history.append(
                {
                    "step": step,
                    "train_loss": running.value(),
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
                f"step {step}: train {running.value():.4f}  val {vl['loss']:.4f} "
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
