"""The crystal record: validation, wrapping and lossless pymatgen / CIF / extxyz conversions."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from matinvent.crystal.record import Crystal, CrystalError
from matinvent.io.structure_files import read_extxyz, write_extxyz

SI_L = 5.431 * np.eye(3)


def _crystal(Z=(14, 14), F=((0.0, 0.0, 0.0), (0.25, 0.25, 0.25)), L=SI_L) -> Crystal:
    return Crystal(Z=np.asarray(Z), F=np.asarray(F, dtype=float), L=np.asarray(L, dtype=float))


def _assert_same(a: Crystal, b: Crystal, atol: float = 1e-6) -> None:
    assert a.allclose(b, atol=atol)
    np.testing.assert_array_equal(a.Z, b.Z)
    np.testing.assert_allclose(a.L, b.L, rtol=0, atol=atol)


# --- validation -------------------------------------------------------------------------------
def test_crystal_error_is_value_error():
    assert issubclass(CrystalError, ValueError)


def test_nan_lattice_is_named():
    L = SI_L.copy()
    L[1, 2] = np.nan
    with pytest.raises(CrystalError, match="lattice contains NaN"):
        _crystal(L=L)


def test_inf_fractional_coordinates_are_named():
    with pytest.raises(CrystalError, match="fractional coordinates contain NaN or inf"):
        _crystal(F=((0.0, 0.0, np.inf), (0.25, 0.25, 0.25)))


@pytest.mark.parametrize("bad_z", [0, 150, -3])
def test_unknown_element_is_named(bad_z):
    with pytest.raises(CrystalError, match="unknown element") as info:
        _crystal(Z=(14, bad_z))
    assert str(bad_z) in str(info.value)


def test_non_integer_atomic_number_rejected():
    with pytest.raises(CrystalError, match="integer"):
        _crystal(Z=(14.0, 14.5))


def test_integral_float_atomic_numbers_accepted():
    c = _crystal(Z=(14.0, 8.0))
    assert c.Z.dtype == np.int64
    assert c.Z.tolist() == [14, 8]


def test_empty_crystal_rejected():
    with pytest.raises(CrystalError, match="non-empty"):
        Crystal(Z=np.zeros(0, dtype=int), F=np.zeros((0, 3)), L=SI_L)


def test_wrong_fractional_shape_is_named():
    with pytest.raises(CrystalError, match=r"F must have shape \(2, 3\)") as info:
        _crystal(F=np.zeros((3, 3)))
    assert "(3, 3)" in str(info.value)
    with pytest.raises(CrystalError, match="F must have shape"):
        _crystal(F=np.zeros((2, 2)))


def test_wrong_lattice_shape_is_named():
    with pytest.raises(CrystalError, match=r"L must have shape \(3, 3\)"):
        _crystal(L=np.eye(3)[:2])


@pytest.mark.parametrize(
    "L",
    [
        np.zeros((3, 3)),
        np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]),  # coplanar vectors
        np.array([[3.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 0.0, 3.0]]),  # parallel vectors
    ],
)
def test_singular_lattice_is_named(L):
    with pytest.raises(CrystalError, match="singular"):
        _crystal(L=L)


def test_fractional_coordinates_are_wrapped_into_unit_interval():
    F = np.array([[-0.25, 1.0, 2.75], [-1e-20, 0.999999, -3.0], [5.5, -7.125, 0.5]])
    c = _crystal(Z=(1, 2, 3), F=F, L=SI_L)
    expected = np.array([[0.75, 0.0, 0.75], [0.0, 0.999999, 0.0], [0.5, 0.875, 0.5]])
    np.testing.assert_allclose(c.F, expected, rtol=0, atol=1e-15)
    assert np.all(c.F >= 0.0) and np.all(c.F < 1.0)
    # Wrapping moves every atom by a whole lattice vector only.
    shift = F - c.F
    np.testing.assert_allclose(shift, np.round(shift), rtol=0, atol=1e-15)


def test_wrapping_does_not_alias_the_input():
    F = np.array([[1.5, 0.0, 0.0]])
    c = Crystal(Z=np.array([1]), F=F, L=SI_L)
    assert F[0, 0] == 1.5
    assert c.F[0, 0] == 0.5


def test_derived_properties(srtio3_perovskite):
    c = Crystal.from_structure(srtio3_perovskite)
    assert c.num_atoms == 5
    assert c.formula == "SrTiO3"
    assert c.volume == pytest.approx(3.905**3, rel=1e-12)
    np.testing.assert_allclose(c.cart_coords, srtio3_perovskite.cart_coords, atol=1e-12)


def test_allclose_compares_species_and_coordinates_modulo_one():
    a = _crystal(F=((0.0, 0.0, 0.0), (0.25, 0.25, 0.25)))
    assert a.allclose(_crystal(F=((1.0 - 1e-9, 0.0, 0.0), (0.25, 0.25, 0.25))), atol=1e-8)  # across the boundary
    assert not a.allclose(_crystal(F=((0.0, 0.0, 0.0), (0.25, 0.25, 0.2501))), atol=1e-6)
    assert not a.allclose(_crystal(Z=(14, 6)))
    assert not a.allclose(_crystal(Z=(14,), F=((0.0, 0.0, 0.0),)))
    assert not a.allclose(_crystal(L=SI_L * 1.001), atol=1e-6)


def test_allclose_lattice_uses_absolute_tolerance():
    a = _crystal(L=10.0 * np.eye(3))
    b = _crystal(L=10.00009 * np.eye(3))  # 9e-5 Å apart
    assert not a.allclose(b, atol=1e-6)


# --- pymatgen -----------------------------------------------------------------------------------
def test_pymatgen_round_trip_is_exact(structures):
    for s in structures:
        c = Crystal.from_structure(s)
        assert c.Z.tolist() == [site.specie.Z for site in s]
        np.testing.assert_array_equal(c.L, s.lattice.matrix)
        np.testing.assert_array_equal(c.F, s.frac_coords - np.floor(s.frac_coords))
        s2 = c.to_structure()
        np.testing.assert_array_equal(s2.lattice.matrix, s.lattice.matrix)
        assert [str(site.specie) for site in s2] == [str(site.specie) for site in s]
        c2 = Crystal.from_structure(s2)
        np.testing.assert_array_equal(c2.Z, c.Z)
        np.testing.assert_array_equal(c2.F, c.F)
        np.testing.assert_array_equal(c2.L, c.L)


def test_textbook_structures_have_expected_content(si_diamond, nacl_rocksalt):
    si = Crystal.from_structure(si_diamond)
    assert si.num_atoms == 8 and set(si.Z.tolist()) == {14}
    nacl = Crystal.from_structure(nacl_rocksalt)
    assert sorted(nacl.Z.tolist()) == [11] * 4 + [17] * 4
    assert nacl.formula == "NaCl"


def test_disordered_structure_rejected():
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(CrystalError, match="disordered"):
        Crystal.from_structure(s)


# --- CIF ------------------------------------------------------------------------------------------
def _cif_volume(text: str) -> float:
    return float(re.search(r"_cell_volume\s+([0-9.]+)", text).group(1))


def test_cif_round_trip_every_mp20_row(data_dir):
    df = pd.read_csv(data_dir / "mp20_sample.csv")
    assert len(df) == 12
    for cif in df["cif"]:
        c = Crystal.from_cif(cif)
        # The record is the crystal the CSV describes (checked against the CIF's own metadata).
        assert c.volume == pytest.approx(_cif_volume(cif), rel=1e-6)
        assert c.num_atoms == len(re.findall(r"^\s+[A-Z][a-z]?\s+\S+\s+1\s", cif, flags=re.M))
        c2 = Crystal.from_cif(c.to_cif())
        _assert_same(c, c2, atol=1e-6)


def test_cif_file_round_trip(tmp_path, srtio3_perovskite):
    c = Crystal.from_structure(srtio3_perovskite)
    path = tmp_path / "srtio3.cif"
    c.write_cif(path)
    _assert_same(c, Crystal.read_cif(path), atol=1e-9)


def test_cif_round_trip_of_skewed_cell():
    rng = np.random.default_rng(0)
    L = 4.0 * np.eye(3) + rng.normal(scale=0.8, size=(3, 3))
    # Species already grouped as pymatgen's CIF parser groups them.
    c = Crystal(Z=np.array([3, 26, 26, 8]), F=rng.random((4, 3)), L=L)
    c2 = Crystal.from_cif(c.to_cif())
    # CIF stores cell parameters only, so the lattice comes back in pymatgen's standard orientation:
    # compare rotation-invariant quantities and the fractional coordinates.
    np.testing.assert_allclose(c2.L @ c2.L.T, c.L @ c.L.T, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(c2.Z, c.Z)
    dF = c2.F - c.F
    np.testing.assert_allclose(dF - np.round(dF), 0.0, atol=1e-8)


def test_cif_round_trip_preserves_atom_order():
    c = Crystal(Z=np.array([8, 26, 26, 3]), F=np.random.default_rng(1).random((4, 3)), L=4.5 * np.eye(3))
    c2 = Crystal.from_cif(c.to_cif())
    _assert_same(c, c2, atol=1e-6)


@pytest.mark.parametrize("text", ["this is not a CIF", "data_x\n_cell_length_a oops\n", ""])
def test_bad_cif_text_raises(text):
    with pytest.raises(CrystalError, match="could not parse CIF"):
        Crystal.from_cif(text)


def test_bad_cif_file_names_the_path(tmp_path):
    path = tmp_path / "broken.cif"
    path.write_text("garbage")
    with pytest.raises(CrystalError, match="could not parse CIF") as info:
        Crystal.read_cif(path)
    assert "broken.cif" in str(info.value)


# --- extxyz ---------------------------------------------------------------------------------------
def test_extxyz_round_trip(tmp_path, data_dir, structures):
    df = pd.read_csv(data_dir / "mp20_sample.csv")
    crystals = [Crystal.from_cif(cif) for cif in df["cif"]] + [Crystal.from_structure(s) for s in structures]
    path = tmp_path / "all.extxyz"
    write_extxyz(crystals, path)
    back = read_extxyz(path)
    assert len(back) == len(crystals)
    for a, b in zip(crystals, back, strict=True):
        _assert_same(a, b, atol=1e-6)


def test_ase_atoms_round_trip(srtio3_perovskite):
    c = Crystal.from_structure(srtio3_perovskite)
    atoms = c.to_atoms()
    assert atoms.pbc.all()
    assert atoms.get_chemical_formula(mode="hill") == "O3SrTi"
    _assert_same(c, Crystal.from_atoms(atoms), atol=1e-12)


def test_unreadable_extxyz_raises(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text("3\nnot a header\nthis is not xyz\n")
    with pytest.raises(CrystalError, match="could not read extxyz"):
        read_extxyz(path)
