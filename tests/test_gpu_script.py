"""scripts/gpu_pretrain.py runs end to end on the CPU at toy size: calibrate, plan epochs, train, sample, pack."""

from __future__ import annotations

import importlib.util
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matinvent.crystal.record import Crystal
from matinvent.io.cdvae_csv import save_arrays

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_pretrain.py"
CONFIG = """
model: {hidden: 8, layers: 1, n_freq: 2, time_dim: 8}
diffusion: {timesteps: 10, type_diffusion: masked, cost_type: 1.0}
data: {val_size: 3}
train: {batch_size: 4, lr: 2.0e-3, warmup_steps: 2, max_steps: 1000, val_every: 500, ckpt_every: 2000,
        device: cuda, threads: 1, amp: bf16, compile: true}
"""


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_pretrain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_run_trains_the_asked_epochs_and_packs_samples(tmp_path, data_dir, script):
    crystals = [Crystal.from_cif(c) for c in pd.read_csv(data_dir / "mp20_sample.csv")["cif"]]
    cache = tmp_path / "cache"
    cache.mkdir()
    save_arrays(crystals[:9], cache / "train_crystals.npz")
    save_arrays(crystals[9:], cache / "val_crystals.npz")
    config = tmp_path / "toy_masked.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    out.mkdir()
    script.train_one(config, out, cache, tmp_path / "runs", time.time() + 60, n=5, steps=2, epochs=3)
    with tarfile.open(out / "toy_masked.tar") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    run = tmp_path / "unpacked" / "toy_masked"
    info = json.loads((run / "gpu_run.json").read_text())
    assert info["wanted_steps"] == info["max_steps"] == 7  # ceil(3 epochs * 9 crystals / batch 4)
    assert info["epochs"] == pytest.approx(7 * 4 / 9)
    assert info["calibrated_crystals_per_s"] > 0 and "eager" in info["calibrations"]
    with np.load(run / "samples.npz") as s:
        assert len(s["num_atoms"]) == 5 and len(s["Z"]) == s["num_atoms"].sum()
    assert (run / "model.safetensors").is_file()


def test_plan_caps_the_steps_at_the_budget(script):
    from matinvent.prior.pretrain_config import PretrainConfig

    cfg = PretrainConfig()
    cfg.train.batch_size, cfg.train.warmup_steps = 2048, 500
    step = {"step_s": 0.1, "warmup_s": 30.0, "crystals_per_s": 20480.0}
    plan = script.plan_steps(cfg, 24372, step, left_s=500.0, epochs=1000)
    assert plan["wanted_steps"] == 11901
    assert plan["max_steps"] == plan["fitting_steps"] == int(script.SAFETY * 500 / 0.1)
    assert plan["needed_crystals_per_s"] == pytest.approx(1000 * 24372 / (script.SAFETY * 500))
