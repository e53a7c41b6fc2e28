"""The fast training loop (packed batches, device-side running loss, foreach EMA) retraces the
plain per-step loop exactly; the ``train.amp`` / ``train.compile`` options."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from matinvent.config_io import ConfigError, from_dict
from matinvent.crystal.batch import CrystalBatch
from matinvent.prior.model import CrystalDiffusion
from matinvent.prior.pretrain import (
    STATE,
    RunningLoss,
    _lr_at,
    compile_denoiser,
    load_training_data,
    natoms_histogram,
    pretrain,
)
from matinvent.prior.pretrain_config import PretrainConfig, validate_pretrain


def tiny_config(max_steps: int = 5, **train) -> PretrainConfig:
    return from_dict(
        PretrainConfig,
        {
            "model": {"hidden": 16, "layers": 1, "n_freq": 4, "time_dim": 16},
            "diffusion": {"timesteps": 20},
            "data": {"val_size": 3},
            "train": {"batch_size": 4, "warmup_steps": 2, "max_steps": max_steps, "val_every": 5, "ckpt_every": 5,
                      **train},
        },
    )  # fmt: skip


def reference_loop(data, cfg: PretrainConfig, cache) -> tuple[dict, dict]:
    """The training loop as it was written before packing: records collated per step, a per-parameter EMA."""
    train, _ = load_training_data(data, cfg, cache)
    torch.manual_seed(cfg.train.seed)
    model = CrystalDiffusion(cfg.model, cfg.diffusion)
    model.set_natoms_histogram(natoms_histogram(train, cfg.diffusion.max_atoms))
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    perm, pos, bs = torch.randperm(len(train), generator=gen), 0, cfg.train.batch_size
    model.train()
    for step in range(cfg.train.max_steps):
        if pos + bs > len(train):
            perm, pos = torch.randperm(len(train), generator=gen), 0
        batch = CrystalBatch.from_crystals([train[i] for i in perm[pos : pos + bs].tolist()])
        pos += bs
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        loss = model.loss(batch, generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        with torch.no_grad():
            d = cfg.train.ema_decay if step >= cfg.train.warmup_steps else 0.0
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
    return model.state_dict(), ema.state_dict()


@pytest.mark.parametrize("type_diffusion", ["gaussian", "masked"])
def test_pretrain_retraces_the_plain_loop_bit_for_bit(tmp_path, tiny_data, type_diffusion):
    cfg = tiny_config(5)  # 9 training crystals, batch 4: crosses two epoch boundaries
    cfg.diffusion.type_diffusion = type_diffusion
    pretrain(tiny_data, cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / STATE, weights_only=True)
    ref_model, ref_ema = reference_loop(tiny_data, cfg, tmp_path / "cache")
    for got, want in ((state["model"], ref_model), (state["ema"], ref_ema)):
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_running_loss_is_the_python_float_average():
    values = [3.7] + [0.1 * i + 1 / 3 for i in range(60)]
    running, expected = RunningLoss(), 0.0
    assert running.value() == 0.0
    for i, v in enumerate(values):
        x = torch.tensor(v, dtype=torch.float32)
        running.update(x)
        expected = x.item() if i == 0 else 0.98 * expected + 0.02 * x.item()
    assert running.value() == expected


def test_amp_key_is_validated():
    cfg = tiny_config(amp="fp16")
    with pytest.raises(ConfigError, match="train.amp"):
        validate_pretrain(cfg)
    validate_pretrain(tiny_config(amp="bf16", compile=True))


def test_bf16_autocast_trains_on_cpu(tmp_path, tiny_data):
    out = pretrain(tiny_data, tiny_config(2, amp="bf16", val_every=2, ckpt_every=2), tmp_path / "bf16")
    state = torch.load(out.parent / STATE, weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in state["model"].values())  # weights stay float32
    assert math.isfinite(state["history"][-1]["val_loss"])


def test_compiling_the_layers_keeps_the_state_dict_keys(make_model):
    model = make_model(dtype=torch.float32)
    keys = list(model.state_dict())
    compile_denoiser(model)  # lazy: nothing is compiled until the first call
    assert list(model.state_dict()) == keys
