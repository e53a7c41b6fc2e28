"""The files of ``matinvent recheck``: JSON-ready values, CIFs readable by pymatgen, atomic writes."""

from __future__ import annotations

import json
import math

import numpy as np
from pymatgen.core import Lattice, Structure

from matinvent.evaluation.recheck_files import clean, merge_summary, write_cifs, write_csv, write_json


def test_clean_turns_nan_and_numpy_into_json_values() -> None:
    out = clean({"a": np.float32(1.5), "b": [math.nan, np.int64(3)], "c": (math.inf, "x")})
    assert out == {"a": 1.5, "b": [None, 3], "c": [None, "x"]}
    assert type(out["b"][1]) is int
    json.dumps(out, allow_nan=False)  # raises on any NaN left


def test_write_cifs_replaces_old_ones_and_skips_failed_relaxations(tmp_path) -> None:
    folder = tmp_path / "recheck"
    folder.mkdir()
    (folder / "stale.cif").write_text("old")
    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rows = [{"rank": 1, "formula": "NaCl", "id": 7}, {"rank": 2, "formula": "Na(Cl)2", "id": 9}]
    write_cifs(folder, rows, [nacl, None])
    assert sorted(p.name for p in folder.iterdir()) == ["001_NaCl_7.cif"]
    assert rows[0]["cif"] == "recheck/001_NaCl_7.cif" and "cif" not in rows[1]
    back = Structure.from_file(folder / "001_NaCl_7.cif")
    assert back.composition.reduced_formula == "NaCl"
    assert math.isclose(back.lattice.a, 5.64, rel_tol=1e-6)


def test_csv_flattens_original_relaxed_and_mlip_values(tmp_path) -> None:
    row = {"id": 1, "original": {"band_gap": 3.0}, "relaxed": {"band_gap": 2.5}, "mlip": {}}
    write_csv(tmp_path / "r.csv", [row], ["band_gap"])
    text = (tmp_path / "r.csv").read_text().splitlines()
    assert text == ["id,band_gap,band_gap_relaxed", "1,3.0,2.5"]
    assert not list(tmp_path.glob("*.tmp"))


def test_merge_summary_adds_a_block_only_to_an_existing_summary(tmp_path) -> None:
    merge_summary(tmp_path / "summary.json", {"n": 1})
    assert not (tmp_path / "summary.json").exists()
    write_json(tmp_path / "summary.json", {"burden": 5.0})
    merge_summary(tmp_path / "summary.json", {"n": 1})
    got = json.loads((tmp_path / "summary.json").read_text())
    assert got == {"evals_per_surviving_hit": None, "survival": None, "surviving_hits": None, "burden": 5.0,
                   "recheck": {"n": 1}}  # fmt: skip
    write_json(tmp_path / "summary.json", {"burden": 5.0, "task": "t", "evaluations": 30})
    merge_summary(tmp_path / "summary.json", {"frac_survive": 0.25, "n_hits_distinct": 8})
    got = json.loads((tmp_path / "summary.json").read_text())
    assert list(got)[:4] == ["task", "evals_per_surviving_hit", "survival", "surviving_hits"]
    assert got["surviving_hits"] == 2.0 and got["evals_per_surviving_hit"] == 15.0  # 30 evaluations / 2
