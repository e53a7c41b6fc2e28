"""MLIP oracles (SevenNet-0 / CHGNet): formation energy, bulk and shear moduli on relaxed structures.

The model tests need the ``mlip`` extra and are skipped without it; the pure-numpy / pymatgen
helpers and the missing-extra error are tested always.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matinvent.crystal.record import Crystal
from matinvent.oracles import mlip
from matinvent.oracles.base import Oracle

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad:UserWarning")  # CHGNet internals

needs_sevenn = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra (sevenn)")
needs_chgnet = pytest.mark.skipif(importlib.util.find_spec("chgnet") is None, reason="needs the mlip extra (chgnet)")


def fcc(a: float) -> Lattice:
    """Primitive fcc cell of a cubic lattice constant a (Å)."""
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def rocksalt_mgo(a: float = 4.257) -> Structure:
    return Structure(fcc(a), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])


def diamond_si(a: float = 5.468) -> Structure:
    return Structure(fcc(a), ["Si", "Si"], [[0] * 3, [0.25] * 3])


def left_handed(s: Structure) -> Structure:
    """The same crystal with lattice vectors a and b swapped (det L < 0)."""
    return Structure(Lattice(s.lattice.matrix[[1, 0, 2]]), s.species, s.frac_coords[:, [1, 0, 2]])


@pytest.fixture(scope="module")
def relaxer() -> mlip.MLIPRelaxer:
    return mlip.MLIPRelaxer("sevennet-0", max_steps=60)


# ----------------------------------------------------------------------------- no model needed


def test_missing_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("sevenn", "chgnet") else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'matinvent\[mlip\]'"):
        mlip.MLIPRelaxer("sevennet-0")
    with pytest.raises(ImportError, match=r"matinvent\[mlip\]"):
        mlip.mlip_oracles("chgnet")
    with pytest.raises(ValueError, match="unknown MLIP model"):
        mlip.MLIPRelaxer("mace")


def test_elemental_references_and_mp_parameters():
    refs = mlip.mp_elemental_references()
    assert len(refs) == 89 and mlip.elemental_refs_path().name == "mp_elemental_refs.json"
    assert refs["O"] == pytest.approx(-4.948, abs=0.01) and refs["Mg"] == pytest.approx(-1.600, abs=0.01)
    fe2o3 = Structure(Lattice.cubic(5.0), ["Fe", "Fe", "O", "O", "O"], np.random.default_rng(0).random((5, 3)))
    assert mlip.mp_run_parameters(fe2o3.composition) == {"run_type": "GGA+U", "hubbards": {"Fe": 5.3}}
    assert mlip.mp_run_parameters(rocksalt_mgo().composition) == {"run_type": "GGA", "hubbards": {}}
    # MgO at MP's raw GGA energy (mp-1265, -11.968 eV / 2 atoms) -> MP's -3.05 eV/atom after the oxide correction
    e = mlip.mp2020_corrected_energy(rocksalt_mgo(), -11.96797428)
    assert mlip.formation_energy_per_atom(rocksalt_mgo(), e) == pytest.approx(-3.05, abs=0.01)


def test_right_handed_is_the_same_crystal():
    s = rocksalt_mgo()
    lh = left_handed(s)
    assert np.linalg.det(lh.lattice.matrix) < 0
    rh = mlip.right_handed(lh)
    assert np.linalg.det(rh.lattice.matrix) > 0
    assert rh.volume == pytest.approx(s.volume)
    np.testing.assert_allclose(rh.cart_coords, lh.cart_coords, atol=1e-10)
    np.testing.assert_allclose(np.sort(rh.distance_matrix.ravel()), np.sort(s.distance_matrix.ravel()), atol=1e-8)
    assert mlip.right_handed(s) is s


# ----------------------------------------------------------------------------- SevenNet-0


@needs_sevenn
def test_mgo_formation_energy_sevennet(relaxer):
    mgo = rocksalt_mgo(4.22)  # slightly compressed: the relaxation has something to do
    ef = mlip.MLIPFormationEnergy(relaxer)([mgo])[0]
    r = relaxer.relaxed(mgo)
    assert r.converged and r.error is None
    assert r.structure.lattice.abc[0] * math.sqrt(2) == pytest.approx(4.25, abs=0.05)
    assert ef == pytest.approx(-3.05, abs=0.1)


@needs_sevenn
def test_left_handed_lattice_gives_the_same_relaxation(relaxer):
    rh = rocksalt_mgo(4.22)
    lh = left_handed(rh)
    assert np.linalg.det(lh.lattice.matrix) < 0
    r_rh, r_lh = relaxer.relax([rh, lh])
    assert r_lh.ok and r_lh.converged
    assert r_lh.energy_per_atom == pytest.approx(r_rh.energy_per_atom, abs=1e-4)
    assert r_lh.structure.volume == pytest.approx(r_rh.structure.volume, rel=1e-3)
    assert r_lh.structure.volume > lh.volume  # the cell expanded: the stress had the right sign


@needs_sevenn
def test_broken_structures_are_nan_and_the_batch_goes_on(relaxer):
    mgo = rocksalt_mgo()
    overlap = Structure(Lattice.cubic(4.0), ["Mg", "O", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    unknown = Structure(Lattice.cubic(3.4), ["Po"], [[0, 0, 0]])  # SevenNet-0 has no polonium
    oracle = mlip.MLIPFormationEnergy(relaxer)
    values = oracle([mgo, overlap, unknown, None, diamond_si()])
    assert np.isfinite(values[[0, 4]]).all() and np.isnan(values[[1, 2, 3]]).all()
    for s, word in ((overlap, "closer"), (unknown, "atomic number")):
        r = relaxer.relaxed(s)
        assert r.structure is None and math.isnan(r.energy_per_atom) and not r.converged and word in r.error
    energies = mlip.MLIPEnergy(relaxer)([overlap, mgo])
    assert np.isnan(energies[0]) and np.isfinite(energies[1])


@needs_sevenn
def test_oracles_share_one_relaxation_per_structure(relaxer):
    oracles = mlip.mlip_oracles(calculator=relaxer.calculator, inner_steps=10)
    assert set(oracles) == {"formation_energy", "bulk_modulus", "shear_modulus", "energy_per_atom", "e_above_hull"}
    assert all(isinstance(o, Oracle) for o in oracles.values())
    shared = oracles["formation_energy"].relaxer
    assert all(o.relaxer is shared for o in oracles.values())
    assert shared.mp2020_correction  # the model name still says SevenNet-0's energy scale
    mgo = rocksalt_mgo()
    batch = [mgo, mgo.copy(), Crystal.from_structure(mgo)]  # the same crystal three times
    values = {name: o(batch) for name, o in oracles.items()}
    assert shared.n_relaxations == 1
    for name, v in values.items():
        assert np.isfinite(v).all() and np.ptp(v) == 0.0, name
    assert values["formation_energy"][0] == pytest.approx(-3.05, abs=0.1)
    assert 0.0 <= values["e_above_hull"][0] < 0.05  # rocksalt MgO is on MP's hull
    assert 100.0 < values["bulk_modulus"][0] < 180.0 and 60.0 < values["shear_modulus"][0] < 160.0
    r = shared.relaxed(mgo)
    assert r is shared.relax([mgo])[0] and r.structure.composition.reduced_formula == "MgO"
    assert shared.n_relaxations == 1


# ----------------------------------------------------------------------------- CHGNet


@pytest.fixture(scope="module")
def chgnet_relaxer() -> mlip.MLIPRelaxer:
    return mlip.MLIPRelaxer("chgnet", max_steps=30)


@needs_chgnet
def test_chgnet_mgo_smoke(chgnet_relaxer):
    assert not chgnet_relaxer.mp2020_correction  # CHGNet predicts MP2020-corrected energies
    ef = mlip.MLIPFormationEnergy(chgnet_relaxer)([rocksalt_mgo(4.22)])[0]
    assert -3.3 < ef < -2.8


@needs_chgnet
def test_chgnet_left_handed_lattice(chgnet_relaxer):
    """CHGNet's raw stress flips sign on a left-handed cell; after normalisation both relax alike."""
    rh = rocksalt_mgo(4.22)
    lh = left_handed(rh)
    r_rh, r_lh = chgnet_relaxer.relax([rh, lh])
    assert r_lh.ok and r_lh.energy_per_atom == pytest.approx(r_rh.energy_per_atom, abs=1e-4)
    assert r_lh.structure.volume == pytest.approx(r_rh.structure.volume, rel=1e-3)
    assert r_lh.structure.volume > 1.02 * lh.volume
