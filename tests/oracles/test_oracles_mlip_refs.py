"""The shipped MP elemental reference table and the script that builds it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from matinvent.oracles import mlip

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_elemental_refs.py"


def load_script():
    spec = importlib.util.spec_from_file_location("build_elemental_refs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_table_has_provenance_and_mp_ids():
    table = json.loads(mlip.elemental_refs_path().read_text())
    assert table["unit"] == "eV/atom" and "calc_compounds.json.gz" in table["source"]
    assert table["script"] == "scripts/build_elemental_refs.py" and (SCRIPT.parent.parent / table["script"]).is_file()
    refs = table["references"]
    assert refs["O"]["material_id"] == "mp-12957" and refs["Si"]["material_id"] == "mp-149"
    assert all(r["material_id"].startswith("mp-") and r["run_type"] in ("GGA", "GGA+U") for r in refs.values())
    assert mlip.mp_elemental_references() == {el: r["energy_per_atom"] for el, r in refs.items()}


def test_script_keeps_the_lowest_single_element_entry():
    entries = {
        "a": {"composition": {"Si": 2.0}, "energy": -10.0, "entry_id": "mp-1", "parameters": {"run_type": "GGA"}},
        "b": {"composition": {"Si": 4.0}, "energy": -22.0, "entry_id": "mp-2", "parameters": {"run_type": "GGA"}},
        "c": {"composition": {"Si": 1.0, "O": 2.0}, "energy": -30.0, "entry_id": "mp-3", "parameters": {}},
        "d": {"composition": {"O": 2.0, "Si": 0.0}, "energy": -9.8, "entry_id": "mp-4", "parameters": {}},
    }
    refs = load_script().elemental_references(entries)
    assert refs == {
        "O": {"energy_per_atom": -4.9, "material_id": "mp-4", "run_type": None},
        "Si": {"energy_per_atom": -5.5, "material_id": "mp-2", "run_type": "GGA"},
    }


def test_script_writes_a_table_the_package_reads(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(
        script,
        "build",
        lambda: {"unit": "eV/atom", "references": {"Mg": {"energy_per_atom": -1.5, "material_id": "mp-x"}}},
    )
    out = tmp_path / "refs.json"
    assert script.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text())["references"] == {"Mg": {"energy_per_atom": -1.5, "material_id": "mp-x"}}
    assert script.main(["--out", str(out), "--check"]) == 0


def test_formation_energy_needs_a_reference():
    og = Structure(Lattice.cubic(5.0), ["Og"], [[0, 0, 0]])  # oganesson: no MP reference
    with pytest.raises(ValueError, match="no MP elemental reference energy for \\['Og'\\]"):
        mlip.formation_energy_per_atom(og, -1.0)
