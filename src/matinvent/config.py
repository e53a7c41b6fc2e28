"""Plain YAML configs validated at load time; every error names the offending key."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from matinvent.crystal_diffusion import DiffusionConfig
from matinvent.denoiser import DenoiserConfig


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the key."""


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


def _check_value(key: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(typ):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key '{key}' has an invalid value {value!r}")
    if dataclasses.is_dataclass(typ):
        return from_dict(typ, value, prefix=key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(typ) or (Any,)
        return [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known keys in {where}: {', '.join(sorted(names))})")
        kwargs[key] = _check_value(prefix + key, value, hints[key])
    obj = cls(**kwargs)
    return obj


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def _positive(cfg: PretrainConfig) -> None:
    checks = {
        "model.hidden": cfg.model.hidden,
        "model.layers": cfg.model.layers,
        "model.n_freq": cfg.model.n_freq,
        "model.time_dim": cfg.model.time_dim,
        "diffusion.timesteps": cfg.diffusion.timesteps,
        "diffusion.max_atoms": cfg.diffusion.max_atoms,
        "train.batch_size": cfg.train.batch_size,
        "train.max_steps": cfg.train.max_steps,
        "train.lr": cfg.train.lr,
        "train.val_every": cfg.train.val_every,
        "train.ckpt_every": cfg.train.ckpt_every,
        "data.val_size": cfg.data.val_size,
    }
    for key, value in checks.items():
        if value <= 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {value}")
    if cfg.diffusion.type_prediction not in ("x0", "eps"):
        raise ConfigError(
            f"config key 'diffusion.type_prediction' must be 'x0' or 'eps', got {cfg.diffusion.type_prediction!r}"
        )
    if cfg.diffusion.type_diffusion not in ("gaussian", "masked"):
        raise ConfigError(
            "config key 'diffusion.type_diffusion' must be 'gaussian' or 'masked', "
            f"got {cfg.diffusion.type_diffusion!r}"
        )
    if cfg.diffusion.absorbing_schedule not in ("linear", "cosine"):
        raise ConfigError(
            "config key 'diffusion.absorbing_schedule' must be 'linear' or 'cosine', "
            f"got {cfg.diffusion.absorbing_schedule!r}"
        )
    if cfg.diffusion.sample_steps is not None and cfg.diffusion.sample_steps < 1:
        raise ConfigError(f"config key 'diffusion.sample_steps' must be >= 1, got {cfg.diffusion.sample_steps}")
    if cfg.diffusion.cost_type_ce < 0:
        raise ConfigError(f"config key 'diffusion.cost_type_ce' must be >= 0, got {cfg.diffusion.cost_type_ce}")
    if cfg.model.time_dim % 2:
        raise ConfigError(f"config key 'model.time_dim' must be even, got {cfg.model.time_dim}")
    if not 0 < cfg.diffusion.sigma_begin < cfg.diffusion.sigma_end:
        raise ConfigError("config keys 'diffusion.sigma_begin' < 'diffusion.sigma_end' must both be > 0")
    if cfg.train.amp not in ("none", "bf16"):
        raise ConfigError(f"config key 'train.amp' must be 'none' or 'bf16', got {cfg.train.amp!r}")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"config key 'train.ema_decay' must be in [0, 1), got {cfg.train.ema_decay}")


def read_yaml(path: str | Path | None) -> Any:
    """The contents of a YAML config file (``{}`` for ``None`` or an empty file); errors name the file."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_pretrain_config(path: str | Path | None) -> PretrainConfig:
    """Read and validate a pretraining YAML; ``None`` gives the defaults."""
    cfg = from_dict(PretrainConfig, read_yaml(path))
    _positive(cfg)
    return cfg
