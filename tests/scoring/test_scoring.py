"""Reading structures for scoring and the ``matinvent score`` / ``matinvent tasks`` commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from matinvent.cli import main
from matinvent.crystal.record import Crystal
from matinvent.io.cdvae_csv import read_cdvae_csv
from matinvent.io.structure_files import read_structures, write_extxyz
from matinvent.oracles import Density
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import load_task


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
        assert main(["score", "--relax", "none", str(cif_dir), "--task", "density", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["id", "formula", "density", "reward", "hit", "valid", "reason"]
    order = sorted(range(5), key=lambda i: table.ids[i])  # CIF files are read in name order
    assert list(df["id"]) == [*(table.ids[i] for i in order), "zz_broken"]
    expected = Density()([table.crystals[i] for i in order])
    np.testing.assert_allclose(df["density"][:5], expected, rtol=1e-9)
    np.testing.assert_allclose(df["reward"][:5], load_task("density").rewards({"density": expected})[0])
    assert np.isnan(df["density"].iloc[5]) and df["reward"].iloc[5] == 0 and df["hit"].iloc[5] == 0
    assert list(df["valid"]) == [1, 1, 1, 1, 1, 0] and df["reason"].iloc[5].startswith("no structure")
    assert "0 invalid (physical; not scored), 1 failed" in capsys.readouterr().out


class CountingDensity(Density):
    def __init__(self):
        self.seen = []

    def evaluate(self, structures):
        self.seen.extend(s.lattice.a for s in structures)
        return super().evaluate(structures)


def squeezed(table, a: float = 1.0):
    """The first fixture crystal shrunk to a cell of edge ``a`` Å (atoms on top of each other)."""
    c = table.crystals[0]
    return Crystal(Z=c.Z, F=c.F, L=c.L / np.abs(c.L).max() * a)


def test_invalid_structures_never_reach_an_oracle_and_say_why(table):
    oracle = CountingDensity()
    scorer = Scorer(load_task("density"), oracles={"density": oracle})
    crystals = [table.crystals[1], squeezed(table), table.crystals[2]]
    scores = scorer(crystals)
    assert oracle.seen == pytest.approx([crystals[0].to_structure().lattice.a, crystals[2].to_structure().lattice.a])
    assert scores.valid.tolist() == [True, False, True] and scores.failed.tolist() == [False, False, False]
    assert np.isnan(scores.values["density"][1]) and scores.reward[1] == 0 and not scores.hit[1]
    assert scores.reason[0] == "" and scores.reason[1].startswith("pair ")
    assert np.isfinite(scorer(crystals, validity="none").values["density"]).all()
    assert Scorer(load_task("density"), oracles={"density": oracle}, validity="full").validity == "physical+composition"


def test_score_cli_validity_option(tmp_path, table, capsys):
    folder = tmp_path / "c"
    folder.mkdir()
    table.crystals[1].write_cif(folder / "a.cif")
    squeezed(table, 2.0).write_cif(folder / "b.cif")  # a 2 Å cell: fails the covalent-radius check only
    out = tmp_path / "s.csv"
    assert main(["score", "--relax", "none", str(folder), "--task", "density", "--out", str(out)]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df["valid"]) == [1, 0] and "g/cm³" not in df["reason"][1] and df["density"][1] == ""
    assert "1 invalid (physical; not scored), 0 failed" in capsys.readouterr().out
    assert (
        main(["score", "--relax", "none", str(folder), "--task", "density", "--out", str(out), "--validity", "cdvae"])
        == 0
    )
    df = pd.read_csv(out)
    assert list(df["valid"]) == [1, 1] and np.isfinite(df["density"]).all()
    with pytest.raises(SystemExit) as exc:  # argparse: exit code 2 and the choices
        main(["score", "--relax", "none", str(folder), "--task", "density", "--validity", "strict"])
    assert exc.value.code == 2 and "physical+composition" in capsys.readouterr().err


def test_score_reads_extxyz_and_cdvae_csv(tmp_path, data_dir, table):
    xyz = tmp_path / "s.extxyz"
    write_extxyz(table.crystals[:3], xyz)
    ids, crystals = read_structures(xyz)
    assert ids == ["s_000000", "s_000001", "s_000002"]
    assert all(a.allclose(b, atol=1e-6) for a, b in zip(crystals, table.crystals[:3], strict=True))
    ids, crystals = read_structures(data_dir / "mp20_sample.csv")
    assert ids == table.ids and len(crystals) == len(table.crystals)
    out = tmp_path / "hhi.csv"
    assert (
        main(["score", "--relax", "none", str(data_dir / "mp20_sample.csv"), "--task", "hhi", "--out", str(out)]) == 0
    )
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
    assert main(["score", "--relax", "none", str(cif_dir), "--task", "gap", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown task 'gap'" in capsys.readouterr().err
    assert main(["score", "--relax", "none", str(tmp_path / "missing"), "--task", "density"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_tasks_cli_lists_every_shipped_task(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for line in ("band_gap 3 ± 0.25 eV", "formation_energy < -2.5 eV/atom", "hhi < 1250", "density 11 ± 0.5"):
        assert line in out
    assert "T4" in out


def test_progress_is_reported_per_structure_as_results_arrive(tmp_path):
    from pymatgen.core import Lattice, Structure

    structures = [Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]) for a in (5.5, 5.6, 5.7)]
    scorer = Scorer(load_task("density"), cache=tmp_path / "cache.sqlite")
    calls: list[tuple[str, int, int]] = []
    scorer.on_progress = lambda stage, done, total: calls.append((stage, done, total))
    scorer(structures)
    assert calls == [("density", k, 3) for k in (1, 2, 3)]
    calls.clear()
    scorer(structures)  # all cached: nothing to wait for, nothing reported
    assert calls == []
