"""``e_above_hull`` as an oracle and task property: MLIP relaxation, MP2020 energy, the shipped MP-20 hull.

The bookkeeping runs on ASE's EMT calculator (no MLIP); the physics on real SevenNet-0 relaxations
of rocksalt MgO (on MP's hull), diamond Si and CsCl-type MgO (a high-pressure phase, far above
the hull at zero pressure).
"""

from __future__ import annotations

import importlib.util
import logging
import math

import numpy as np
import pytest
from ase.calculators.emt import EMT
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition, Lattice, Structure

from matinvent.evaluation import stability
from matinvent.oracles import OracleError, builtin_oracles, get_oracle, oracle_unit
from matinvent.oracles.cgcnn import CGCNNBandGap
from matinvent.oracles.hull import ReferenceHull, load_hull
from matinvent.oracles.mlip import MLIPEnergyAboveHull, MLIPRelaxer, relaxed_hull_energy
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import load_task, task_from_dict

needs_sevenn = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra (sevenn)")


def fcc(a: float) -> Lattice:
    """Primitive fcc cell of a cubic lattice constant a (Å)."""
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def rocksalt_mgo(a: float = 4.257) -> Structure:
    return Structure(fcc(a), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])


def cscl_mgo(a: float = 2.65) -> Structure:
    """MgO in the CsCl (B2) structure: stable only above ~500 GPa; relaxation keeps the cubic symmetry."""
    return Structure(Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])


def diamond_si(a: float = 5.468) -> Structure:
    return Structure(fcc(a), ["Si", "Si"], [[0] * 3, [0.25] * 3])


# ----------------------------------------------------------------------------- no MLIP


def test_e_above_hull_is_a_registered_oracle_with_its_class_metadata():
    cls = builtin_oracles()["e_above_hull"]
    assert cls is MLIPEnergyAboveHull and oracle_unit("e_above_hull") == cls.unit == "eV/atom"
    assert "hull" in cls.description
    task = load_task("band_gap_stable")
    assert task.properties == ["band_gap", "e_above_hull"]
    assert task.window_text() == "band_gap 3 ± 0.25; e_above_hull 0 ± 0.1"  # both sides: far below = a hull gap


def test_without_the_extra_the_oracle_error_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sevenn" else real(name, *a))
    with pytest.raises(OracleError, match=r"oracle 'e_above_hull' cannot be built: .*matinvent\[mlip\]"):
        get_oracle("e_above_hull")


def test_e_above_hull_path_with_a_stand_in_calculator(caplog):
    """EMT stands in for the MLIP: for an element E_hull = E_form; a hull without the element gives NaN."""
    relaxer = MLIPRelaxer("emt", calculator=EMT(), max_steps=20)
    assert not relaxer.mp2020_correction  # an unknown model name counts as already MP2020-corrected
    cu = Structure(fcc(3.6), ["Cu"], [[0, 0, 0]])
    e_form = relaxer.formation_energy([cu])[0]
    oracle = MLIPEnergyAboveHull(relaxer)
    assert np.isfinite(e_form) and oracle([cu])[0] == pytest.approx(e_form, abs=1e-9)
    mg_o = ReferenceHull([PDEntry(Composition("MgO"), -6.0)], source="Mg-O only")
    with caplog.at_level(logging.WARNING):
        values = MLIPEnergyAboveHull(relaxer, hull=mg_o)([cu, None])
    assert np.isnan(values).all() and "no hull entries contain Cu" in caplog.text
    assert relaxer.n_relaxations == 1  # both oracles read the one cached relaxation
    energy = relaxed_hull_energy(relaxer.relaxed(cu), relaxer, mg_o)
    assert energy.e_form == pytest.approx(e_form) and math.isnan(energy.e_above_hull)
    assert energy.reason == "e_above_hull: no hull entries contain Cu"


# ----------------------------------------------------------------------------- SevenNet-0


@pytest.fixture(scope="module")
def relaxer() -> MLIPRelaxer:
    return MLIPRelaxer("sevennet-0", max_steps=60)


@needs_sevenn
def test_stable_structures_are_on_the_hull_and_a_high_pressure_phase_far_above(relaxer):
    values = MLIPEnergyAboveHull(relaxer)([rocksalt_mgo(4.2), diamond_si(), cscl_mgo()])
    mgo, si, b2 = values
    assert abs(mgo) <= 0.05 and 0.0 <= si <= 0.1  # both on MP's hull (mp-1265, mp-149)
    assert b2 > 0.5 and b2 - mgo > 0.5  # MgO B2 vs B1: ~0.75 eV/atom with SevenNet-0
    assert relaxer.relaxed(cscl_mgo()).converged  # a relaxed high-energy phase, not an unconverged one
    # the prior evaluation (matinvent.evaluation.stability) reads the same number off the same relaxation
    row, _ = stability.measure_structure(cscl_mgo(), 0, relaxer, load_hull())
    assert row["e_above_hull"] == pytest.approx(b2, abs=1e-12) and row["stable"] is False
    assert relaxer.n_relaxations == 3


@needs_sevenn
def test_e_above_hull_alone_in_a_task_without_relax(relaxer):
    task = task_from_dict({"name": "stable", "properties": {"e_above_hull": {"target": "below", "threshold": 0.1}}})
    oracle = get_oracle("e_above_hull", calculator=relaxer.calculator)  # what a task file gets, on a loaded model
    assert isinstance(oracle, MLIPEnergyAboveHull) and oracle.relaxer is not relaxer
    scorer = Scorer(task, oracles={"e_above_hull": oracle})
    scores = scorer([rocksalt_mgo(4.2), cscl_mgo()])
    expected = MLIPEnergyAboveHull(relaxer)([rocksalt_mgo(4.2), cscl_mgo()])
    np.testing.assert_allclose(scores.values["e_above_hull"], expected, atol=1e-6)  # its own relaxations
    assert scores.hit.tolist() == [True, False] and oracle.relaxer.n_relaxations == 2
    assert scores.structures[0].lattice.a == pytest.approx(rocksalt_mgo(4.2).lattice.a)  # inputs, not relaxed


@needs_sevenn
def test_relax_mlip_scores_band_gap_stable_on_one_relaxation_per_structure(relaxer):
    task = load_task("band_gap_stable")
    structures = [rocksalt_mgo(4.2), cscl_mgo(), diamond_si()]
    scorer = Scorer(task, relax="mlip", calculator=relaxer.calculator, max_steps=60)
    scores = scorer(structures)
    assert scorer.relaxer.n_relaxations == 3  # one per structure, for both properties
    relaxed = scores.structures
    assert relaxed[0].lattice.a > rocksalt_mgo(4.2).lattice.a  # the compressed cell expanded
    np.testing.assert_allclose(scores.values["band_gap"], CGCNNBandGap()(relaxed), atol=1e-9)  # on relaxed cells
    np.testing.assert_allclose(
        scores.values["e_above_hull"], MLIPEnergyAboveHull(relaxer)(structures), atol=1e-6
    )  # the same relaxation as the stand-alone oracle
    assert scores.values["e_above_hull"][1] > 0.5 and scores.reward[1] == 0.0  # B2: far above the hull
    scorer(structures)  # scoring again: cached
    assert scorer.relaxer.n_relaxations == 3
