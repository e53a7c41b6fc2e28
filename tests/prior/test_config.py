"""Pretraining YAML configs: every error names the offending key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from matinvent.config_io import ConfigError, from_dict, to_dict
from matinvent.prior.denoiser import DenoiserConfig
from matinvent.prior.diffusion_config import DiffusionConfig
from matinvent.prior.pretrain_config import PretrainConfig, load_pretrain_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_defaults():
    cfg = load_pretrain_config(None)
    assert cfg == PretrainConfig()
    assert cfg.model == DenoiserConfig() and cfg.diffusion == DiffusionConfig()


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "model:\n  hiden: 64\n")
    with pytest.raises(ConfigError, match=r"model\.hiden") as info:
        load_pretrain_config(path)
    assert "hidden" in str(info.value)  # the known keys are listed


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="'optimizer'"):
        load_pretrain_config(write(tmp_path, "optimizer:\n  lr: 0.1\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ('train:\n  lr: "fast"\n', "train.lr"),
        ("train:\n  batch_size: 3.5\n", "train.batch_size"),
        ("train:\n  batch_size: true\n", "train.batch_size"),
        ("diffusion:\n  scale_lattice: 1\n", "diffusion.scale_lattice"),
        ("train:\n  device: 0\n", "train.device"),
        ("data:\n  val_glob: [a, b]\n", "data.val_glob"),
    ],
)
def test_wrong_type_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        load_pretrain_config(write(tmp_path, text))


def test_section_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="'model' must be a mapping"):
        load_pretrain_config(write(tmp_path, "model: 3\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  batch_size: -4\n", "train.batch_size"),
        ("train:\n  batch_size: 0\n", "train.batch_size"),
        ("model:\n  layers: 0\n", "model.layers"),
        ("diffusion:\n  timesteps: -1\n", "diffusion.timesteps"),
        ("train:\n  lr: -0.001\n", "train.lr"),
        ("train:\n  ema_decay: 1.0\n", "train.ema_decay"),
        ("diffusion:\n  sigma_begin: 0.9\n", "diffusion.sigma_begin"),
    ],
)
def test_out_of_range_value_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        load_pretrain_config(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found") as info:
        load_pretrain_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pretrain_config(write(tmp_path, "model: [1, 2\n"))


def test_empty_file_gives_defaults(tmp_path):
    assert load_pretrain_config(write(tmp_path, "")) == PretrainConfig()


def test_partial_config_keeps_other_defaults(tmp_path):
    cfg = load_pretrain_config(write(tmp_path, "model:\n  hidden: 16\ntrain:\n  lr: 2\n"))
    assert cfg.model.hidden == 16 and cfg.model.layers == DenoiserConfig().layers
    assert cfg.train.lr == 2.0 and isinstance(cfg.train.lr, float)  # ints are accepted for floats
    assert cfg.train.batch_size == PretrainConfig().train.batch_size


def test_yaml_round_trip(tmp_path):
    cfg = PretrainConfig()
    cfg.model.hidden, cfg.model.layers = 48, 3
    cfg.diffusion.timesteps, cfg.diffusion.step_lr, cfg.diffusion.scale_lattice = 77, 3e-6, False
    cfg.data.val_glob, cfg.data.val_size = "valid*.csv.gz", 17
    cfg.train.lr, cfg.train.seed, cfg.train.device = 2.5e-4, 42, "cuda:1"
    path = write(tmp_path, yaml.safe_dump(to_dict(cfg)))
    back = load_pretrain_config(path)
    assert back == cfg
    assert to_dict(back) == to_dict(cfg)


def test_from_dict_builds_nested_dataclasses():
    cfg = from_dict(PretrainConfig, {"model": {"hidden": 8}, "train": {"seed": 3}})
    assert dataclasses.is_dataclass(cfg.model) and cfg.model.hidden == 8 and cfg.train.seed == 3


RL_CONFIGS = ("optimize.yaml", "rl_benchmark.yaml", "align.yaml", "paper.yaml")


@pytest.mark.parametrize(
    "path",
    [p for p in sorted((REPO / "configs").glob("*.yaml")) if p.name not in RL_CONFIGS],
    ids=lambda p: p.name,
)
def test_shipped_pretrain_configs_are_valid(path):
    assert isinstance(load_pretrain_config(path), PretrainConfig)


@pytest.mark.parametrize("name", RL_CONFIGS)
def test_shipped_optimize_configs_are_valid(name):
    from matinvent.rl import RLConfig, load_rl_config

    assert isinstance(load_rl_config(REPO / "configs" / name), RLConfig)


def test_optimize_config_defaults_file_matches_the_dataclass():
    import dataclasses

    from matinvent.rl import RLConfig, load_rl_config

    assert dataclasses.asdict(load_rl_config(REPO / "configs" / "optimize.yaml")) == dataclasses.asdict(RLConfig())


def test_plain_scientific_notation_is_a_number(tmp_path):
    cfg = load_pretrain_config(write(tmp_path, "train:\n  lr: 1e-3\n"))
    assert cfg.train.lr == pytest.approx(1e-3)


def test_accepted_time_dim_builds_a_working_model(tmp_path):
    import numpy as np
    import torch

    from matinvent.crystal.batch import CrystalBatch
    from matinvent.crystal.record import Crystal
    from matinvent.prior.model import CrystalDiffusion

    text = "model:\n  hidden: 8\n  layers: 1\n  n_freq: 2\n  time_dim: 15\ndiffusion:\n  timesteps: 5\n"
    try:
        cfg = load_pretrain_config(write(tmp_path, text))
    except ConfigError as exc:  # rejecting it, naming the key, is a fine fix too
        assert "model.time_dim" in str(exc)
        return
    model = CrystalDiffusion(cfg.model, cfg.diffusion)
    crystal = Crystal(Z=np.array([8, 12]), F=np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), L=4.0 * np.eye(3))
    losses = model.loss(CrystalBatch.from_crystals([crystal]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"])
