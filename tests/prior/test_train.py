"""Pretraining on a tiny data set: checkpoints, refusal to overwrite, and exact resumption."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from matinvent.config_io import from_dict
from matinvent.crystal.record import Crystal
from matinvent.prior.checkpoint import checkpoint_info, load_prior
from matinvent.prior.pretrain import STATE, _lr_at, load_training_data, natoms_histogram, pretrain
from matinvent.prior.pretrain_config import PretrainConfig


def tiny_config(max_steps: int = 4) -> PretrainConfig:
    return from_dict(
        PretrainConfig,
        {
            "model": {"hidden": 16, "layers": 1, "n_freq": 4, "time_dim": 16},
            "diffusion": {"timesteps": 20},
            "data": {"val_size": 3},
            "train": {
                "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "max_steps": max_steps,
                "val_every": 2, "ckpt_every": 2, "seed": 0,
            },
        },
    )  # fmt: skip


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoint" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def run4(tmp_path_factory, tiny_data):
    """An uninterrupted 4-step run."""
    out = tmp_path_factory.mktemp("run4")
    pretrain(tiny_data, tiny_config(4), out)
    return out


def test_checkpoint_is_written_and_loadable(run4):
    assert (run4 / "checkpoint" / "model.safetensors").is_file()
    assert (run4 / "checkpoint" / "config.json").is_file()
    assert (run4 / STATE).is_file()
    model = load_prior(run4 / "checkpoint")
    assert model.denoiser_config.hidden == 16 and model.config.timesteps == 20
    final = model.sample(2, generator=torch.Generator().manual_seed(0), steps=3).final
    assert torch.all((final.F >= 0) & (final.F < 1))
    info = checkpoint_info(run4 / "checkpoint")
    assert info["steps"] == 4 and info["final"] is True
    assert info["train_crystals"] == 8 + 1 and info["val_crystals"] == 3
    assert math.isfinite(info["val_loss"])
    rows = list(csv.DictReader(open(run4 / "history.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(math.isfinite(float(r["val_loss"])) for r in rows)


def test_refuses_to_overwrite_a_run(run4, tiny_data):
    before = weights(run4)
    with pytest.raises(FileExistsError, match="resume"):
        pretrain(tiny_data, tiny_config(4), run4)
    assert_same_weights(weights(run4), before)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tiny_data, run4):
    # With warmup_steps = 2 the learning rates of steps 0 and 1 do not depend on max_steps, so a 2-step
    # run followed by a resume to 4 steps must retrace the uninterrupted 4-step run exactly.
    cfg2, cfg4 = tiny_config(2), tiny_config(4)
    assert [_lr_at(s, cfg2) for s in (0, 1)] == [_lr_at(s, cfg4) for s in (0, 1)]
    out = tmp_path / "resumed"
    pretrain(tiny_data, cfg2, out)
    after2 = weights(out)
    assert checkpoint_info(out / "checkpoint")["steps"] == 2
    pretrain(tiny_data, cfg4, out, resume=True)
    after4 = weights(out)
    assert checkpoint_info(out / "checkpoint")["steps"] == 4
    # The comparison is not vacuous: steps 3 and 4 changed the weights.
    assert any(not torch.equal(after2[k], after4[k]) for k in after4 if k.startswith("denoiser."))
    assert_same_weights(after4, weights(run4))
    s_resumed = torch.load(out / STATE, weights_only=True)
    s_straight = torch.load(run4 / STATE, weights_only=True)
    assert s_resumed["step"] == s_straight["step"] == 4
    assert_same_weights(s_resumed["model"], s_straight["model"])
    assert torch.equal(s_resumed["generator"], s_straight["generator"])


def test_different_seed_gives_different_weights(tmp_path, tiny_data, run4):
    cfg = tiny_config(4)
    cfg.train.seed = 1
    pretrain(tiny_data, cfg, tmp_path / "seed1")
    a, b = weights(tmp_path / "seed1"), weights(run4)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("denoiser."))


def test_training_data_split_and_cache(tmp_path, tiny_data):
    cfg = tiny_config()
    train, val = load_training_data(tiny_data, cfg, tmp_path / "cache")
    assert len(val) == 3 and len(train) == 9
    assert (tmp_path / "cache" / "train_crystals.npz").is_file()
    # All 12 fixture crystals are used exactly once.
    fixture = [Crystal.from_cif(c) for c in pd.read_csv(tiny_data / "train.csv")["cif"]]
    fixture += [Crystal.from_cif(c) for c in pd.read_csv(tiny_data / "val.csv")["cif"]]
    used = train + val
    assert sorted(c.volume for c in used) == pytest.approx(sorted(c.volume for c in fixture), rel=1e-12)
    # The cache is read back on the next call, identically.
    train2, val2 = load_training_data(tiny_data, cfg, tmp_path / "cache")
    assert all(a.allclose(b, atol=0) for a, b in zip(train + val, train2 + val2, strict=True))


def test_no_training_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        load_training_data(tmp_path, tiny_config(), tmp_path / "cache")


def test_natoms_histogram():
    crystals = [Crystal(Z=np.ones(n, dtype=int), F=np.zeros((n, 3)), L=np.eye(3)) for n in (1, 3, 3, 5, 30)]
    h = natoms_histogram(crystals, max_atoms=6)
    assert h.tolist() == [0, 1, 0, 2, 0, 1, 0]


def test_learning_rate_schedule():
    cfg = tiny_config(100)
    cfg.train.warmup_steps, cfg.train.lr, cfg.train.lr_min = 10, 1e-3, 1e-5
    assert _lr_at(0, cfg) == pytest.approx(1e-4)
    assert _lr_at(9, cfg) == pytest.approx(1e-3)
    assert _lr_at(10, cfg) == pytest.approx(1e-3)
    assert _lr_at(55, cfg) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert _lr_at(100, cfg) == pytest.approx(1e-5)
    lrs = [_lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_resume_without_state_starts_fresh(tmp_path, tiny_data, run4):
    # ``resume`` on an empty folder is a fresh run (and so equals the uninterrupted run).
    pretrain(tiny_data, tiny_config(4), tmp_path / "fresh", resume=True)
    assert_same_weights(weights(tmp_path / "fresh"), weights(run4))


def test_accepted_val_size_zero_trains_or_is_rejected(tmp_path, tiny_data):
    from matinvent.config_io import ConfigError
    from matinvent.prior.pretrain_config import load_pretrain_config

    path = tmp_path / "cfg.yaml"
    path.write_text(
        "model: {hidden: 8, layers: 1, n_freq: 2, time_dim: 8}\ndiffusion: {timesteps: 5}\n"
        "data: {val_size: 0}\ntrain: {batch_size: 4, max_steps: 1, warmup_steps: 1}\n"
    )
    try:
        cfg = load_pretrain_config(path)
    except ConfigError as exc:  # rejecting it, naming the key, is a fine fix too
        assert "data.val_size" in str(exc)
        return
    assert (pretrain(tiny_data, cfg, tmp_path / "out") / "model.safetensors").is_file()


def test_init_from_starts_from_a_checkpoints_weights(tmp_path, tiny_data, run4):
    cfg = tiny_config(max_steps=0 + 1)
    cfg.train.lr = cfg.train.lr_min = 1e-12  # one step with a negligible learning rate: the weights stay those loaded
    cfg.train.warmup_steps = 1
    cfg.train.init_from = str(run4 / "checkpoint")
    out = pretrain(tiny_data, cfg, tmp_path / "warm")
    start, end = weights(run4), load_file(str(out / "model.safetensors"))
    for k in start:
        torch.testing.assert_close(end[k], start[k], rtol=0, atol=1e-6)


def test_init_from_rejects_a_different_architecture(tmp_path, tiny_data, run4):
    from matinvent.config_io import ConfigError

    cfg = tiny_config()
    cfg.model.hidden = 32
    cfg.train.init_from = str(run4 / "checkpoint")
    with pytest.raises(ConfigError, match="train.init_from"):
        pretrain(tiny_data, cfg, tmp_path / "bad")


def test_masked_types_warm_start_from_a_gaussian_type_prior(tmp_path, tiny_data, run4):
    """Everything but the mask column is copied; the mask column of the type-input layers starts at 0."""
    cfg = tiny_config(max_steps=1)
    cfg.diffusion.type_diffusion = "masked"
    cfg.train.lr = cfg.train.lr_min = 1e-12
    cfg.train.warmup_steps = 1
    cfg.train.init_from = str(run4 / "checkpoint")
    out = pretrain(tiny_data, cfg, tmp_path / "masked")
    start, end = weights(run4), load_file(str(out / "model.safetensors"))
    assert start.keys() == end.keys()
    for k in start:
        if end[k].shape == start[k].shape:
            torch.testing.assert_close(end[k], start[k], rtol=0, atol=1e-6)
        else:
            assert end[k].shape[1] == start[k].shape[1] + 1, k
            torch.testing.assert_close(end[k][:, :-1], start[k], rtol=0, atol=1e-6)
            assert torch.all(end[k][:, -1].abs() < 1e-6)
    assert load_prior(out).masked_types
