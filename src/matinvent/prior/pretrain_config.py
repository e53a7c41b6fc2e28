"""The pretraining config (``matinvent pretrain``), validated at load; every error names the key.

The generic parts (number syntax, YAML, :class:`Bounds`, ``from_dict``) live in the torch-free
:mod:`matinvent.config_io`; ``PRETRAIN_BOUNDS`` bounds every numeric pretraining key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from matinvent.config_io import (  # noqa: F401 - re-exported: the generic names' historical home
    MAX_SEED,
    Bounds,
    ConfigError,
    as_number,
    check_choice,
    from_dict,
    load_yaml_file,
    read_yaml,
    to_dict,
)
from matinvent.prior.denoiser import DenoiserConfig
from matinvent.prior.diffusion_config import DiffusionConfig


@dataclass
class DataConfig:
    """Which CSV files to train on and how much of the validation split to hold out."""

    train_glob: str = "train*.csv*"
    val_glob: str = "val*.csv*"
    val_size: int = 512
    use_rest_of_val_for_training: bool = True
    max_atoms: int = 20


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of pretraining."""

    batch_size: int = 64
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup_steps: int = 200
    max_steps: int = 20000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    val_every: int = 500
    ckpt_every: int = 500
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    init_from: str | None = None  # a prior checkpoint folder whose weights start the run (new optimiser/schedule)
    amp: str = "none"  # "bf16": the training forward pass under bfloat16 autocast (GPU); "none": float32
    compile: bool = False  # torch.compile the denoiser's message-passing layers


@dataclass
class PretrainConfig:
    """Everything ``matinvent pretrain`` needs."""

    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Bounds of every numeric pretraining key; sanity limits far beyond any useful value, not tuning advice.
PRETRAIN_BOUNDS: dict[str, Bounds] = {
    "model.hidden": Bounds(1, 4096),
    "model.layers": Bounds(1, 64),
    "model.n_freq": Bounds(1, 256),
    "model.time_dim": Bounds(2, 4096),
    "model.n_types": Bounds(1, 1000),
    "diffusion.timesteps": Bounds(1, 100_000),
    "diffusion.sigma_begin": Bounds(0, 10, low_open=True),
    "diffusion.sigma_end": Bounds(0, 10, low_open=True),
    "diffusion.cost_lattice": Bounds(0, 1e6),
    "diffusion.cost_coord": Bounds(0, 1e6),
    "diffusion.cost_type": Bounds(0, 1e6),
    "diffusion.cost_type_ce": Bounds(0, 1e6),
    "diffusion.step_lr": Bounds(0, 1),
    "diffusion.max_atoms": Bounds(1, 1000),
    "diffusion.clip_lattice": Bounds(0, 1e6, low_open=True),  # None: no clipping
    "diffusion.clip_types": Bounds(0, 1e6, low_open=True),
    "diffusion.sample_steps": Bounds(1, 100_000),  # None: all T steps
    "data.val_size": Bounds(1, 10_000_000),
    "data.max_atoms": Bounds(1, 1000),
    "train.batch_size": Bounds(1, 65_536),
    "train.lr": Bounds(0, 10, low_open=True),
    "train.lr_min": Bounds(0, 10),  # and <= train.lr
    "train.warmup_steps": Bounds(0, 1_000_000_000),
    "train.max_steps": Bounds(1, 1_000_000_000),
    "train.grad_clip": Bounds(0, 1e6, low_open=True),
    "train.ema_decay": Bounds(0, 1, high_open=True),
    "train.val_every": Bounds(1, 1_000_000_000),
    "train.ckpt_every": Bounds(1, 1_000_000_000),
    "train.seed": Bounds(0, MAX_SEED),
    "train.threads": Bounds(0, 1024),
}


def validate_pretrain(cfg: PretrainConfig) -> PretrainConfig:
    """Check every key of a pretraining config against ``PRETRAIN_BOUNDS`` and the cross-key rules."""
    for key, bounds in PRETRAIN_BOUNDS.items():
        section, name = key.split(".")
        bounds.check(key, getattr(getattr(cfg, section), name))
    d, t = cfg.diffusion, cfg.train
    check_choice("diffusion.type_prediction", d.type_prediction, ("x0", "eps"))
    check_choice("diffusion.type_diffusion", d.type_diffusion, ("gaussian", "masked"))
    check_choice("diffusion.absorbing_schedule", d.absorbing_schedule, ("linear", "cosine"))
    check_choice("train.amp", t.amp, ("none", "bf16"))
    if cfg.model.time_dim % 2:
        raise ConfigError(f"config key 'model.time_dim' must be even, got {cfg.model.time_dim}")
    if not d.sigma_begin < d.sigma_end:
        raise ConfigError("config keys 'diffusion.sigma_begin' < 'diffusion.sigma_end' must both be > 0")
    if t.lr_min > t.lr:
        raise ConfigError(f"config key 'train.lr_min' ({t.lr_min}) must be <= 'train.lr' ({t.lr})")
    return cfg


def load_pretrain_config(path: str | Path | None) -> PretrainConfig:
    """Read and validate a pretraining YAML; ``None`` gives the defaults."""
    try:
        return validate_pretrain(from_dict(PretrainConfig, read_yaml(path)))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None and str(path) not in str(exc) else str(exc)) from exc
