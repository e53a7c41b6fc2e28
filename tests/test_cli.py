"""The command line: sample → evaluate on a tiny checkpoint, and clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matinvent.checkpoint import save_prior
from matinvent.cli import main
from matinvent.crystal import Crystal, read_extxyz
from matinvent.crystal_diffusion import CrystalDiffusion, DiffusionConfig
from matinvent.denoiser import DenoiserConfig


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = CrystalDiffusion(DenoiserConfig(hidden=16, layers=1, n_freq=2, time_dim=8), DiffusionConfig(timesteps=10))
    hist = torch.zeros(21)
    hist[2:6] = 1.0
    model.set_natoms_histogram(hist)
    return save_prior(model, tmp_path_factory.mktemp("ckpt") / "tiny")


def test_sample_writes_cifs_and_extxyz_reproducibly(tmp_path, tiny_checkpoint):
    args = ["sample", "--n", "5", "--seed", "3", "--checkpoint", str(tiny_checkpoint), "--steps", "4"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    info = json.loads((tmp_path / "a" / "sample_info.json").read_text())
    cifs = sorted((tmp_path / "a").glob("*.cif"))
    assert len(cifs) == info["n_written"] and info["n_written"] + len(info["failed"]) == 5
    assert cifs[0].name == "000000.cif"
    for f in cifs:
        assert f.read_text() == (tmp_path / "b" / f.name).read_text()
    frames = read_extxyz(tmp_path / "a" / "samples.extxyz")
    assert len(frames) == len(cifs)
    first = Crystal.read_cif(cifs[0])
    assert np.allclose(first.to_structure().lattice.abc, frames[0].to_structure().lattice.abc, atol=1e-6)


def test_evaluate_writes_json(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "s"
    main(["sample", "--n", "4", "--checkpoint", str(tiny_checkpoint), "--steps", "3", "--out", str(out)])
    assert main(["evaluate", str(out)]) == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["n_generated"] == 4
    for key in ("structure_validity", "composition_validity", "uniqueness"):
        assert 0.0 <= ev[key] <= 1.0
    assert "structure_validity" in capsys.readouterr().out


def test_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden: 8\n")
    assert main(["pretrain", "--data", str(tmp_path), "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "model.hiden" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["sample", "--n", "2", "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path)]) == 2
    assert "not a matinvent checkpoint" in capsys.readouterr().err
