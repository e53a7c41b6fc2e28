"""Issue 33: structure-level uniqueness (StructureMatcher) beside the paper's reduced-formula one."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from matinvent.rl.uniqueness import UniqueKeys


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])


def cesium_chloride(a: float = 3.3) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])


def test_formula_mode_counts_polymorphs_as_one():
    keys = UniqueKeys("formula")
    assert [keys.key("NaCl", s) for s in (rocksalt(), cesium_chloride())] == ["NaCl", "NaCl"]


def test_structure_mode_tells_polymorphs_apart_and_matches_a_supercell_and_a_strained_copy():
    keys = UniqueKeys("structure")
    strained = rocksalt(5.70)  # 1 % larger: the same structure within StructureMatcher's tolerances
    supercell = rocksalt().make_supercell([2, 1, 1], in_place=False)
    got = [keys.key("NaCl", s) for s in (rocksalt(), cesium_chloride(), strained, supercell, cesium_chloride(3.35))]
    assert got == ["NaCl#0", "NaCl#1", "NaCl#0", "NaCl#0", "NaCl#1"]
    assert keys.key("KCl", rocksalt()) == "KCl#0"  # another formula starts its own classes
    assert keys.key("NaCl", None) == "NaCl#2"  # a structure that cannot be compared is a class of its own


def test_state_round_trip_gives_the_keys_of_an_uninterrupted_run():
    a = UniqueKeys("structure")
    a.key("NaCl", rocksalt())
    b = UniqueKeys("formula")
    b.load_state_dict(a.state_dict())
    assert b.mode == "structure"
    assert b.key("NaCl", cesium_chloride()) == a.key("NaCl", cesium_chloride()) == "NaCl#1"
    assert b.key("NaCl", rocksalt(5.66)) == "NaCl#0"


def test_an_unknown_mode_names_the_choices():
    with pytest.raises(ValueError, match="unique_by must be one of formula, structure"):
        UniqueKeys("composition")
