"""Reading structures for scoring and the ``matinvent score`` / ``matinvent tasks`` commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from matinvent.cli import main
from matinvent.crystal import write_extxyz
from matinvent.datasets import read_cdvae_csv
from matinvent.oracles import Density
from matinvent.rewards import load_task
from matinvent.scoring import Scorer, read_structures


@pytest.fixture(scope="module")
def table(data_dir):
    return read_cdvae_csv(data_dir / "mp20_sample.csv")


@pytest.fixture()
def cif_dir(tmp_path, table):
    d = tmp_path / "cifs"
    d.mkdir()
    for mid, c in zip(table.ids[:5], table.crystals[:5], strict=True):
        c.write_cif(d / f"{mid}.cif")
    (d / "zz_broken.cif").write_text("data_broken\n_cell_length_a nonsense\n")
    return d


def test_score_cli_writes_one_row_per_structure(cif_dir, tmp_path, table, capsys):
    out = tmp_path / "scores.csv"
    with pytest.warns(UserWarning, match="zz_broken.cif"):
        assert main(["score", str(cif_dir), "--task", "density", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["id", "formula", "density", "reward", "hit"]
    order = sorted(range(5), key=lambda i: table.ids[i])  # CIF files are read in name order
    assert list(df["id"]) == [*(table.ids[i] for i in order), "zz_broken"]
    expected = Density()([table.crystals[i] for i in order])
    np.testing.assert_allclose(df["density"][:5], expected, rtol=1e-9)
    np.testing.assert_allclose(df["reward"][:5], load_task("density").rewards({"density": expected})[0])
    assert np.isnan(df["density"].iloc[5]) and df["reward"].iloc[5] == 0 and df["hit"].iloc[5] == 0
    assert "1 failed" in capsys.readouterr().out


def test_score_reads_extxyz_and_cdvae_csv(tmp_path, data_dir, table):
    xyz = tmp_path / "s.extxyz"
    write_extxyz(table.crystals[:3], xyz)
    ids, crystals = read_structures(xyz)
    assert ids == ["s_000000", "s_000001", "s_000002"]
    assert all(a.allclose(b, atol=1e-6) for a, b in zip(crystals, table.crystals[:3], strict=True))
    ids, crystals = read_structures(data_dir / "mp20_sample.csv")
    assert ids == table.ids and len(crystals) == len(table.crystals)
    out = tmp_path / "hhi.csv"
    assert main(["score", str(data_dir / "mp20_sample.csv"), "--task", "hhi", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df["id"]) == table.ids and set(df["hit"]) <= {0, 1}
    assert ((df["hhi"] < 1250) == (df["hit"] == 1)).all()


def test_multi_property_task_scores_every_property(table):
    task = load_task("T3")  # bulk modulus (CGCNN) + HHI
    scores = Scorer(task)(table.crystals[:4])
    assert set(scores.values) == {"bulk_modulus", "hhi"}
    assert np.isfinite(scores.values["bulk_modulus"]).all() and (scores.values["bulk_modulus"] > 0).all()
    np.testing.assert_allclose(scores.reward, task.rewards(scores.values)[0])


def test_score_cli_errors_name_the_problem(tmp_path, cif_dir, capsys):
    assert main(["score", str(cif_dir), "--task", "gap", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown task 'gap'" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "missing"), "--task", "density"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_tasks_cli_lists_every_shipped_task(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for line in ("band_gap 3 ± 0.25 eV", "formation_energy < -2.5 eV/atom", "hhi < 1250", "density 11 ± 0.5"):
        assert line in out
    assert "T4" in out
