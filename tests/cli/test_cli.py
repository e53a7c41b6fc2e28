"""The command line: sample → evaluate on a tiny checkpoint, and clear errors on bad input."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from matinvent.cli import main
from matinvent.crystal.record import Crystal
from matinvent.io.structure_files import read_extxyz


def test_sample_writes_cifs_and_extxyz_reproducibly(tmp_path, tiny_checkpoint):
    args = ["sample", "--n", "5", "--seed", "3", "--checkpoint", str(tiny_checkpoint), "--steps", "4"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    info = json.loads((tmp_path / "a" / "samples.json").read_text())
    cifs = sorted((tmp_path / "a").glob("*.cif"))
    assert len(cifs) == info["n_written"] and info["n_written"] + len(info["failed"]) == 5 == info["n"]
    assert sorted(info["files"]) == [f.name for f in cifs] and info["seed"] == 3
    assert cifs[0].name == "000000.cif"
    for f in cifs:
        assert f.read_text() == (tmp_path / "b" / f.name).read_text()
    frames = read_extxyz(tmp_path / "a" / "samples.extxyz")
    assert len(frames) == len(cifs)
    first = Crystal.read_cif(cifs[0])
    assert np.allclose(first.to_structure().lattice.abc, frames[0].to_structure().lattice.abc, atol=1e-6)


def test_sample_refuses_a_used_folder_before_sampling(tmp_path, tiny_checkpoint, capsys):
    args = ["sample", "--n", "2", "--checkpoint", str(tiny_checkpoint), "--steps", "2", "--out", str(tmp_path)]
    (tmp_path / "mine.cif").write_text("x")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "mine.cif" in err and "--overwrite" in err
    assert main([*args, "--overwrite"]) == 0
    assert not (tmp_path / "mine.cif").exists() and (tmp_path / "samples.json").exists()


def test_evaluate_writes_json(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "s"
    main(["sample", "--n", "4", "--checkpoint", str(tiny_checkpoint), "--steps", "3", "--out", str(out)])
    assert main(["evaluate", str(out), "--save-detailed", str(tmp_path / "d.csv")]) == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["n_generated"] == 4 and ev["validity_gate"] == "physical"
    assert ev["run_id"] == json.loads((out / "samples.json").read_text())["run_id"]
    for key in ("physical_validity", "structure_validity", "composition_validity", "uniqueness"):
        assert 0.0 <= ev[key] <= 1.0
    assert sum(ev["n_elements_histogram"].values()) == ev["n_readable"]
    assert "physical_validity" in capsys.readouterr().out
    df = pd.read_csv(tmp_path / "d.csv")
    assert len(df) == 4 and df["physical_valid"].mean() == pytest.approx(ev["physical_validity"])


def nacl(a: float) -> Crystal:
    return Crystal(Z=np.array([11, 17]), F=np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), L=np.eye(3) * a)


def test_evaluate_stability_runs_on_physically_valid_crystals(tmp_path, monkeypatch, capsys):
    calls = {}

    def stability_metrics(structures, *, n, seed=0, hull=None, training=None, progress=True, relaxer=None):
        calls.update(lattices=[s.lattice.a for s in structures], n=n, seed=seed, hull=hull, training=training)
        rows = [{"index": len(structures) - 1, "formula": "NaCl", "e_above_hull": 0.05, "stable": True}]
        return {"n_selected": 1.0, "sun_rate": 0.25}, rows

    monkeypatch.setitem(
        sys.modules, "matinvent.evaluation.stability", types.SimpleNamespace(stability_metrics=stability_metrics)
    )
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name, a in (("a", 3.3), ("b", 1.2), ("c", 3.6), ("d", 3.9)):  # b: atoms 1.0 Å apart, not valid
        nacl(a).write_cif(folder / f"{name}.cif")
    hull = tmp_path / "hull.csv"
    hull.write_text("x")
    detailed = tmp_path / "d.csv"
    args = ["evaluate", str(folder), "--stability", "--stability-n", "2", "--seed", "5", "--hull", str(hull)]
    assert main([*args, "--save-detailed", str(detailed)]) == 0
    assert calls["lattices"] == pytest.approx([3.3, 3.6, 3.9]) and calls["n"] == 2 and calls["seed"] == 5
    assert calls["hull"] == str(hull) and calls["training"] is None
    stability = json.loads((folder / "evaluation.json").read_text())["stability"]
    assert stability == {"n_selected": 1.0, "sun_rate": 0.25, "engine": stability["engine"]}
    assert stability["engine"] in ("batched", "ase")  # auto: batched where torch-sim is installed
    assert "stability.sun_rate" in capsys.readouterr().out
    df = pd.read_csv(detailed)
    assert list(df["id"]) == ["a", "b", "c", "d"]
    assert df["e_above_hull"].isna().tolist() == [True, True, True, False]  # index 2 of the valid ones = d
    assert df["stability_formula"][3] == "NaCl" and df["stable"][3]
    assert main(["evaluate", str(folder), "--hull", str(hull)]) == 2  # --hull without --stability
    assert main([*args[:-2], "--hull", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden: 8\n")
    assert main(["pretrain", "--data", str(tmp_path), "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "model.hiden" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["sample", "--n", "2", "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path)]) == 2
    assert "not a matinvent checkpoint" in capsys.readouterr().err
