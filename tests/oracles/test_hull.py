"""The shipped MP-20 convex hull and energies above it (no MLIP needed)."""

from __future__ import annotations

import gzip
import math

import pandas as pd
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from matinvent.oracles.hull import (
    HullFileError,
    ReferenceHull,
    default_hull_path,
    e_above_hull,
    e_above_hull_with_reason,
    load_hull,
)


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    return pd.read_csv(default_hull_path())


def test_shipped_hull_is_package_data(shipped):
    path = default_hull_path()
    assert path.is_file() and path.stat().st_size < 500_000
    assert list(shipped.columns) == ["formula", "e_form_per_atom", "material_id", "energy_kind"]
    assert len(shipped) > 9000 and shipped["formula"].is_unique
    hull = load_hull()
    assert hull is load_hull(path)  # cached
    assert len(hull) == len(shipped) + len(hull.elements)  # + one 0 eV/atom reference per element
    assert {"Na", "Cl", "Mg", "O", "Si"} <= hull.elements


def test_stable_compound_is_on_the_hull_and_a_polymorph_above_it(shipped):
    nacl = shipped.set_index("formula").loc["NaCl"]  # mp-22862, e_above_hull 0 in MP-20
    assert nacl["material_id"] == "mp-22862" and nacl["energy_kind"] == "computed"
    e_form = float(nacl["e_form_per_atom"])
    assert e_above_hull("NaCl", e_form) == pytest.approx(0.0, abs=1e-6)
    assert e_above_hull(Composition("Na4Cl4"), e_form + 0.2) == pytest.approx(0.2, abs=1e-6)
    assert e_above_hull("NaCl", e_form - 0.05) == pytest.approx(-0.05, abs=1e-6)  # below: kept negative


def test_hull_point_entries_reproduce_mps_e_above_hull():
    # MP-20 has MgO only as mp-549706 (-2.979 eV/atom, 0.074 above MP's hull): the file keeps MP's
    # hull energy there (rocksalt mp-1265, -3.053 eV/atom), so that polymorph comes out at 0.074.
    assert e_above_hull("MgO", -2.97926407) == pytest.approx(0.0741025, abs=1e-5)
    # Elements sit at 0; an unstable elemental polymorph is above by its formation energy.
    assert e_above_hull("Si", 0.0) == pytest.approx(0.0, abs=1e-9)
    assert e_above_hull("Cu", 0.0357) == pytest.approx(0.0357, abs=1e-6)


def test_new_chemical_system_and_missing_element():
    # no MP-20 entry spans Li-Mg-Al-Si-S; the phase diagram is built from its subsystems
    value, reason = e_above_hull_with_reason("LiMgAlSiS4", -1.0)
    assert math.isfinite(value) and reason is None
    value, reason = e_above_hull_with_reason("NaRn", -0.5)
    assert math.isnan(value) and "Rn" in reason
    value, reason = e_above_hull_with_reason("NaCl", math.nan)
    assert math.isnan(value) and "not finite" in reason


def test_user_hull_file_and_phase_diagram(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("formula,e_form_per_atom,material_id\nNaCl,-2.0,x-1\nNa2Cl,-1.0,x-2\n")
    hull = load_hull(path)
    assert isinstance(hull, ReferenceHull) and hull.elements == {"Na", "Cl"} and len(hull) == 4
    assert e_above_hull("NaCl", -2.0, hull) == pytest.approx(0.0, abs=1e-9)
    assert e_above_hull("Na2Cl", -1.0, hull) == pytest.approx(1 / 3, abs=1e-9)  # above NaCl + Na
    assert e_above_hull("NaCl", -1.9, path) == pytest.approx(0.1, abs=1e-9)
    gz = tmp_path / "mine.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert len(load_hull(gz)) == 4
    # a pymatgen PhaseDiagram of formation energies is accepted as it is
    diagram = PhaseDiagram([PDEntry(Composition(s), 0.0) for s in ("Na", "Cl")] + [PDEntry("NaCl", -4.0)])
    assert e_above_hull("NaCl", -1.5, diagram) == pytest.approx(0.5, abs=1e-9)
    assert math.isnan(e_above_hull("MgO", -3.0, diagram))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("formula,e_form_per_atom\nNaCl,-2.0\nXx2,-1.0\n", r"line 3 .*'Xx2'.*bad formula"),
        ("formula,e_form_per_atom\nNaCl,-2.0\nNaCl2,abc\n", r"line 3 .*finite number"),
        ("formula,e_form_per_atom\nNaCl,\n", r"line 2 .*finite number"),
        ("formula,energy\nNaCl,-2.0\n", r"missing column.*e_form_per_atom"),
        ("formula,e_form_per_atom\n", r"no entries"),
    ],
)
def test_bad_hull_file_names_file_and_line(tmp_path, text, match):
    path = tmp_path / "bad_hull.csv"
    path.write_text(text)
    with pytest.raises(HullFileError, match=match) as err:
        load_hull(path)
    assert "bad_hull.csv" in str(err.value)


def test_missing_or_unreadable_hull_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_hull(tmp_path / "nope.csv")
    binary = tmp_path / "junk.csv.gz"
    binary.write_bytes(b"\x00\x01 not gzip")
    with pytest.raises(HullFileError, match="junk.csv.gz"):
        load_hull(binary)


def test_n_compounds_counts_compound_entries_of_the_chemical_system(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("formula,e_form_per_atom\nNaCl,-2.0\nNa2Cl,-1.0\nMgO,-3.0\n")
    hull = load_hull(path)
    assert hull.n_compounds(["Na", "Cl"]) == 2
    assert hull.n_compounds(["Na", "Cl", "Mg"]) == 2  # subsystems count, MgO does not lie in Na-Cl-Mg
    assert hull.n_compounds(["Mg", "O", "Na"]) == 1
    assert hull.n_compounds(["Na", "Mg"]) == 0  # only elements: E_hull would equal E_form there
    # with no compound in the system the hull is the elements alone: E_hull = E_form
    assert e_above_hull("NaMg", -0.3, hull) == pytest.approx(-0.3, abs=1e-9)
