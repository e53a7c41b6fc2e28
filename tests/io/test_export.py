"""``matinvent export``: a run's hits as extxyz, CIFs or an ASE database, read back with pymatgen / ASE
and compared with the run memory (same structures, same properties)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from matinvent.cli import main
from matinvent.crystal.record import Crystal
from matinvent.io.cdvae_csv import read_cdvae_csv
from matinvent.io.export import export_run, select_rows
from matinvent.io.run_memory import CrystalRecord, Memory
from matinvent.oracles import Density

RUN_ID = "123456789012"  # all digits: ASE's database refuses it as a key-value string, so it goes to data


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    """A run folder whose memory holds 10 real MP-20 crystals: 2 iterations, 4 hits (one formula twice)."""
    crystals = read_cdvae_csv(data_dir / "mp20_sample.csv").crystals[:9]
    crystals.append(crystals[1])  # the same hit again (iteration 1)
    density = Density()([c.to_structure() for c in crystals])
    hits = {1, 3, 6, 9}
    path = tmp_path_factory.mktemp("run")
    memory = Memory(path / "memory.sqlite", ["density", "band_gap"])
    records = []
    for i, (c, d) in enumerate(zip(crystals, density, strict=True)):
        valid = i != 4  # row 4: rejected by the gate, never scored
        records.append(
            CrystalRecord(
                run_id=RUN_ID,
                method="weighted-denoising",
                iteration=i // 5,
                idx=i % 5,
                formula=c.formula,
                cif=c.to_cif(),
                valid=valid,
                failed=False,
                properties={"density": d if valid else None, "band_gap": 1.0 + 0.1 * i if i != 6 else None},
                reward=1.0 if i in hits else 0.1 * i / 10 if valid else 0.0,
                filtered_reward=0.5 if i == 9 else (1.0 if i in hits else 0.0),
                hit=i in hits,
            )
        )
    memory.add(records)
    memory.close()
    (path / "run.json").write_text(json.dumps({"task": "density", "method": "weighted-denoising", "run_id": RUN_ID}))
    return path


def _memory(run_dir) -> pd.DataFrame:
    from matinvent.io.run_memory import read_memory

    return read_memory(run_dir).set_index("id")


def _expected_hits(run_dir) -> pd.DataFrame:
    return select_rows(_memory(run_dir).reset_index(), hits_only=True, distinct=True)


def _same_crystal(structure_like, cif: str) -> None:
    ref = Crystal.from_cif(cif)
    got = (
        Crystal.from_structure(structure_like)
        if hasattr(structure_like, "lattice")
        else Crystal.from_atoms(structure_like)
    )
    assert got.Z.tolist() == ref.Z.tolist()
    np.testing.assert_allclose(got.L, ref.L, atol=1e-8)
    diff = got.F - ref.F
    np.testing.assert_allclose(diff - np.round(diff), 0.0, atol=1e-8)


def test_select_rows_keeps_distinct_hits_best_first(run_dir):
    rows = _expected_hits(run_dir)
    assert list(rows["id"]) == [2, 4, 7]  # hits 1, 3, 6 (sqlite ids from 1); row 9 repeats row 1's formula
    assert len(select_rows(_memory(run_dir).reset_index(), hits_only=True, distinct=False)) == 4
    everything = select_rows(_memory(run_dir).reset_index(), hits_only=False, distinct=False)
    assert 5 not in set(everything["id"]) and len(everything) == 9  # the invalid row is never exported
    assert list(select_rows(_memory(run_dir).reset_index(), hits_only=True, top=2)["id"]) == [2, 4]


def test_extxyz_export_reads_back_with_the_same_structures_and_properties(run_dir, tmp_path, capsys):
    from ase.io import read

    out = tmp_path / "hits.extxyz"
    assert main(["export", str(run_dir), "--hits", "--format", "extxyz", "--out", str(out)]) == 0
    assert "wrote 3 hits" in capsys.readouterr().out
    frames = read(str(out), index=":")
    memory = _memory(run_dir)
    assert [f.info["memory_id"] for f in frames] == [2, 4, 7]
    for atoms in frames:
        row = memory.loc[atoms.info["memory_id"]]
        _same_crystal(atoms, row["cif"])
        assert atoms.info["density"] == pytest.approx(row["density"], rel=1e-12)
        assert atoms.info["reward"] == row["reward"] and atoms.info["hit"] is True
        assert atoms.info["reduced_formula"] == row["formula"] and atoms.info["task"] == "density"
        assert str(atoms.info["run_id"]) == RUN_ID
    band_gap = [("band_gap" in f.info) for f in frames]
    assert band_gap == [True, True, False]  # row 7's band gap is NULL: left out, not written as NaN


def test_cif_export_reads_back_with_pymatgen(run_dir, tmp_path):
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifFile

    out = tmp_path / "cifs"
    assert main(["export", str(run_dir), "--hits", "--format", "cif", "--out", str(out)]) == 0
    index = pd.read_csv(out / "properties.csv")
    assert list(index["memory_id"]) == [2, 4, 7]
    memory = _memory(run_dir)
    for rank, (name, memory_id) in enumerate(zip(index["file"], index["memory_id"], strict=True), start=1):
        row = memory.loc[memory_id]
        assert name == f"{rank:04d}_{row['formula'].replace('(', '-').replace(')', '-').strip('-')}.cif"
        _same_crystal(Structure.from_file(out / name), row["cif"])
        block = next(iter(CifFile.from_file(str(out / name)).data.values())).data
        assert float(block["_matinvent_density"]) == row["density"]  # repr() round-trips exactly
        assert block["_matinvent_reduced_formula"] == row["formula"] and block["_matinvent_hit"] == "True"


def test_ase_db_export_reads_back_with_key_value_pairs(run_dir, tmp_path):
    from ase.db import connect

    out = tmp_path / "hits.db"
    result = export_run(run_dir, out, fmt="ase-db", hits_only=False, top=4)
    assert result.n == 4
    memory = _memory(run_dir)
    rows = list(connect(str(out)).select())
    expected = select_rows(memory.reset_index(), hits_only=False, top=4)
    assert [r.key_value_pairs["memory_id"] for r in rows] == list(expected["id"])
    for r in rows:
        ref = memory.loc[r.memory_id]
        _same_crystal(r.toatoms(), ref["cif"])
        assert r.density == pytest.approx(ref["density"], rel=1e-12) and r.reward == ref["reward"]
        assert r.data["run_id"] == RUN_ID  # a string ASE reads as a number: kept in the row's data
        assert r.reduced_formula == ref["formula"] and bool(r.hit) == bool(ref["hit"])
    assert connect(str(out)).count(hit=True) == 3


def test_export_refuses_an_existing_out_unless_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "hits.extxyz"
    out.write_text("mine")
    args = ["export", str(run_dir), "--hits", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and out.read_text() == "mine"
    assert main([*args, "--overwrite", "--top", "1"]) == 0
    from ase.io import read

    assert len(read(str(out), index=":")) == 1


def test_export_errors_name_the_problem(run_dir, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--hits", "--out", str(tmp_path / "x.extxyz")]) == 2
    assert "has no memory.sqlite" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--top", "-1", "--out", str(tmp_path / "y.extxyz")]) == 2
    assert "top must be >= 0" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    Memory(empty / "memory.sqlite", ["density"]).close()
    assert main(["export", str(empty), "--hits", "--out", str(tmp_path / "z.extxyz")]) == 2
    err = capsys.readouterr().err
    assert "holds no hits" in err and str(empty) in err
    assert not (tmp_path / "z.extxyz").exists()


def test_recheck_results_travel_with_the_exported_hits(run_dir, tmp_path):
    import shutil

    from ase.io import read

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    pd.DataFrame(
        {"id": [2, 4], "e_above_hull": [0.031, np.nan], "still_hit": [True, False], "survives": [True, False]}
    ).to_csv(run / "recheck.csv", index=False)  # as matinvent recheck writes it; id 7 was not checked
    out = export_run(run, tmp_path / "hits.extxyz", "extxyz")
    frames = {f.info["memory_id"]: f.info for f in read(str(out.path), index=":")}
    assert frames[2]["recheck_e_above_hull"] == pytest.approx(0.031) and frames[2]["recheck_survives"] is True
    assert "recheck_e_above_hull" not in frames[4] and frames[4]["recheck_still_hit"] is False  # NaN left out
    assert not any(k.startswith("recheck_") for k in frames[7])
    (run / "recheck.csv").write_text("garbage\n\x00\x01")
    with pytest.raises(ValueError, match="recheck.csv: not a recheck table"):
        export_run(run, tmp_path / "again.extxyz", "extxyz")
