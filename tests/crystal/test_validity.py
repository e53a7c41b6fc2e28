"""Physical validity (covalent-radius contacts + density window), the CDVAE check, and the named gates."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from matinvent.crystal.record import Crystal
from matinvent.crystal.validity import (
    DENSITY_WINDOW,
    F_COVALENT,
    cdvae_validity,
    composition_validity,
    density_gcm3,
    gate_flags,
    gate_validity,
    periodic_distances,
    physical_validity,
    physically_valid,
    resolve_gate,
)
from matinvent.io.cdvae_csv import read_cdvae_csv

MP20_VAL = Path(__file__).parents[2] / ".." / "shared" / "data" / "mp_20" / "val.csv.gz"
ROCKSALT_F = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5] * 3]


def rocksalt(a: float, z: tuple[int, int] = (11, 17)) -> Crystal:
    return Crystal(Z=np.array([z[0]] * 4 + [z[1]] * 4), F=np.array(ROCKSALT_F, float), L=np.eye(3) * a)


def pair(z1: int, z2: int, d: float, box: float = 10.0) -> Crystal:
    """Two atoms ``d`` Å apart along x in a cubic box."""
    return Crystal(Z=np.array([z1, z2]), F=np.array([[0.3, 0.5, 0.5], [0.3 + d / box, 0.5, 0.5]]), L=np.eye(3) * box)


def pbrocksalt_with_density(rho: float) -> Crystal:
    c = rocksalt(1.0, (82, 83))  # PbBi rocksalt; scale the cell to the density asked for
    return rocksalt(density_gcm3(c) ** (1 / 3) / rho ** (1 / 3), (82, 83))


def test_rejects_a_192_g_cm3_crystal_and_says_why():
    c = pbrocksalt_with_density(192.0)
    assert density_gcm3(c) == pytest.approx(192.0)
    ok, reason = physical_validity(c)
    assert not ok and reason.startswith("pair ")  # a cell that small has atoms on top of each other
    ok, reason = physical_validity(c, f=0.0)  # contacts not checked: the density alone rejects it
    assert not ok and reason == f"density 192.0 g/cm³ outside [{DENSITY_WINDOW[0]:g}, {DENSITY_WINDOW[1]:g}]"
    assert not physically_valid(c)


def test_rejects_34_g_cm3_by_density_alone():
    c = pbrocksalt_with_density(34.0)
    d = c.L[0, 0] / 2  # nearest Pb–Bi distance
    assert d >= F_COVALENT * (1.46 + 1.48)  # the contacts would pass ...
    ok, reason = physical_validity(c)
    assert not ok and reason.startswith("density 34.0 g/cm³ outside")  # ... the density does not


def test_rejects_a_0p3_angstrom_pair_also_across_the_boundary():
    ok, reason = physical_validity(pair(14, 8, 0.3))
    assert not ok and reason == f"pair Si–O 0.30 Å < {F_COVALENT:g} × (1.11+0.66) Å"
    across = Crystal(Z=np.array([14, 8]), F=np.array([[0.015, 0.5, 0.5], [0.985, 0.5, 0.5]]), L=np.eye(3) * 10)
    ok, reason = physical_validity(across)
    assert not ok and "0.30 Å" in reason
    assert physical_validity(pair(14, 8, 1.62)) == (True, "")  # a Si–O bond


def test_an_atom_too_close_to_its_own_image_is_rejected():
    tiny = Crystal(Z=np.array([11]), F=np.zeros((1, 3)), L=np.eye(3) * 2.0)  # Na every 2 Å
    ok, reason = physical_validity(tiny)
    assert not ok and "Na–Na (own image) 2.00 Å" in reason
    assert cdvae_validity(tiny)[0]  # the CDVAE check excludes self-images


def test_periodic_distances_equal_brute_force_minimum_image():
    rng = np.random.default_rng(0)
    L = np.array([[4.0, 0, 0], [3.1, 2.5, 0], [1.0, 0.7, 6.0]])  # strongly skewed
    F = rng.random((5, 3))
    shifts = np.array(list(itertools.product(range(-4, 5), repeat=3)))
    expected = np.empty((5, 5))
    for i, j in itertools.product(range(5), repeat=2):
        d = np.linalg.norm((F[j] - F[i] + shifts) @ L, axis=1)
        expected[i, j] = np.sort(d)[1] if i == j else d.min()  # own image: the shortest non-zero shift
    np.testing.assert_allclose(periodic_distances(F, L), expected, atol=1e-9)


def test_accepts_the_mp20_fixture_as_crystals_and_structures(data_dir):
    crystals = read_cdvae_csv(data_dir / "mp20_sample.csv").crystals
    results = [physical_validity(c) for c in crystals]
    assert sum(ok for ok, _ in results) >= 0.99 * len(crystals)
    assert [physical_validity(c.to_structure()) for c in crystals] == results


@pytest.mark.skipif(not MP20_VAL.exists(), reason="MP-20 not available")
def test_accepts_99_percent_of_mp20_val_head():
    crystals = read_cdvae_csv(MP20_VAL, limit=400).crystals
    assert np.mean([physically_valid(c) for c in crystals]) >= 0.99


def test_textbook_structures_are_valid_and_disordered_ones_are_not(structures, nacl_rocksalt):
    assert all(physically_valid(s) for s in structures)  # Si, NaCl, SrTiO3
    disordered = nacl_rocksalt.copy()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    assert physical_validity(disordered) == (False, "disordered structure (partial occupancies)")
    assert physical_validity(None)[0] is False


def test_gates_combine_checks_and_map_old_names():
    squeezed = pair(11, 17, 1.0)  # NaCl 1.0 Å apart: passes the 0.5 Å check, fails the covalent one
    na_cl2 = Crystal(Z=np.array([11, 17, 17]), F=np.array([[0, 0, 0], [0.5] * 3, [0.25] * 3]), L=np.eye(3) * 6)
    assert not gate_validity(squeezed, "physical")[0]
    assert gate_validity(squeezed, "cdvae") == (True, "")
    assert gate_validity(squeezed, "cdvae+composition") == (True, "")
    ok, reason = gate_validity(na_cl2, "physical+composition")
    assert not ok and reason == composition_validity(na_cl2)[1] and "SMACT" in reason
    assert gate_validity(na_cl2, "physical") == (True, "")
    assert resolve_gate("full") == "physical+composition" and resolve_gate("structure") == "physical"
    with pytest.raises(ValueError, match="unknown validity 'strict'"):
        resolve_gate("strict")
    flags, reasons = gate_flags([squeezed, None, na_cl2], "none")
    assert flags.tolist() == [True, False, True] and reasons[0] == "" and reasons[1]


def test_rl_gate_uses_physical_validity_by_default_and_keeps_the_old_check():
    from matinvent.config_io import ConfigError
    from matinvent.rl.config import RLConfig, validate
    from matinvent.rl.loop import validity_flags

    crystals = [pair(11, 17, 1.0), rocksalt(5.64), None]
    assert validity_flags(crystals, RLConfig().validity).tolist() == [False, True, False]
    assert validity_flags(crystals, "full").tolist() == [False, True, False]
    assert validity_flags(crystals, "cdvae+composition").tolist() == [True, True, False]
    assert validity_flags(crystals, "none").tolist() == [True, True, False]
    for name in ("full", "structure", "cdvae", "physical"):
        validate(RLConfig(validity=name))
    with pytest.raises(ConfigError, match="'validity'"):
        validate(RLConfig(validity="strict"))
