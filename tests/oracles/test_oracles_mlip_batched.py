"""Batched MLIP relaxations (torch-sim; SevenNet-0, CHGNet) against the one-at-a-time ASE path and calculators."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("sevenn") is None or importlib.util.find_spec("torch_sim") is None,
        reason="needs the mlip extra (sevenn, torch-sim-atomistic)",
    ),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def fcc(a: float) -> Lattice:
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def tiny_structures() -> list[Structure]:
    """Three small cells away from equilibrium: strained rock-salt MgO, rattled diamond Si, sheared rock-salt NaCl."""
    mgo = Structure(fcc(4.40), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])
    si = Structure(fcc(5.40), ["Si", "Si"], [[0.01, 0.0, 0.02], [0.25, 0.27, 0.24]])
    sheared = np.array(fcc(5.50).matrix) @ np.array([[1.0, 0.03, 0.0], [0.0, 1.02, 0.0], [0.0, 0.0, 0.99]])
    nacl = Structure(Lattice(sheared), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    return [mgo, si, nacl]


MODELS = [
    "sevennet-0",
    pytest.param("chgnet", marks=pytest.mark.skipif(importlib.util.find_spec("chgnet") is None, reason="needs chgnet")),
]


@pytest.fixture(scope="module")
def batched():
    from matinvent.oracles.mlip.batched import BatchedRelaxer

    return BatchedRelaxer(fmax=0.02, max_steps=400)


@pytest.mark.parametrize("model", MODELS)
def test_batched_and_per_structure_relaxations_agree(model):
    from matinvent.oracles.mlip.batched import BatchedRelaxer
    from matinvent.oracles.mlip.relax import MLIPRelaxer

    structures = tiny_structures()
    got = BatchedRelaxer(model=model, fmax=0.02, max_steps=400).relax(structures)
    ref = MLIPRelaxer(model=model, fmax=0.02, max_steps=400).relax(structures)
    for g, r, s in zip(got, ref, structures, strict=True):
        assert g.ok and r.ok and g.converged and r.converged, (s.formula, g.error, r.error)
        assert abs(g.energy_per_atom - r.energy_per_atom) < 0.005  # eV/atom, the 5 meV/atom
        assert g.structure.composition == s.composition
        assert abs(g.structure.volume - r.structure.volume) / r.structure.volume < 0.01
        assert 0 < g.steps <= 400


@pytest.mark.parametrize("model", MODELS)
def test_single_points_match_the_ase_calculator(model):
    from pymatgen.io.ase import AseAtomsAdaptor

    from matinvent.oracles.mlip.batched import BatchedRelaxer
    from matinvent.oracles.mlip.calculators import load_calculator

    calc = load_calculator(model)
    points = BatchedRelaxer(model=model).single_points(tiny_structures())
    for s, point in zip(tiny_structures(), points, strict=True):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        assert point.reason == ""
        assert point.energy_per_atom == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=1e-4)
        np.testing.assert_allclose(point.forces, atoms.get_forces(), atol=1e-3)
        np.testing.assert_allclose(point.stress, atoms.get_stress(voigt=False), atol=1e-4)


def test_a_structure_that_cannot_relax_gets_nan_and_a_reason_and_the_rest_go_on(batched):
    collapsed = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])  # atoms 0.04 Å apart
    out = batched.relax([collapsed, *tiny_structures()[:1], None])
    assert math.isnan(out[0].energy_per_atom) and out[0].structure is None and "closer than" in out[0].error
    assert out[1].ok and out[1].converged
    assert math.isnan(out[2].energy_per_atom) and out[2].error
    seen = []
    batched.relax([collapsed], on_result=lambda i, r: seen.append((i, r.ok)))
    assert seen == [(0, False)]


def test_step_and_time_bounds_hold_per_structure():
    from matinvent.oracles.mlip.batched import TIME_LIMIT, BatchedRelaxer

    few = BatchedRelaxer(fmax=1e-4, max_steps=5).relax(tiny_structures())
    assert all(r.ok and not r.converged and r.steps <= 5 for r in few)
    late = BatchedRelaxer(fmax=1e-4, max_steps=400, max_seconds=1e-6).relax(tiny_structures())
    assert all(r.ok and not r.converged and r.error == TIME_LIMIT for r in late)


def test_the_time_bound_counts_from_when_a_structure_joins_so_queued_ones_are_not_starved(monkeypatch):
    """One structure in flight at a time (2 atoms each); a fake clock gains 1 s per reading, so every round costs
    2 s (one reading before the steps, one after). A bound of 7 s per structure ends each of the three after the
    round that ends 9 s after it joined: 5 rounds of its own. A bound from the start of the call (the behaviour
    before) left the third with no step at all."""
    from matinvent.oracles.mlip import batched as mod

    clock = iter(range(10**6))
    monkeypatch.setattr(mod.time, "monotonic", lambda: float(next(clock)))
    out = mod.BatchedRelaxer(fmax=1e-6, max_steps=400, max_seconds=7.0, atoms_in_flight=2).relax(tiny_structures())
    assert [r.steps for r in out] == [25, 25, 25]  # 5 rounds of 5 steps each
    assert all(r.ok and not r.converged and r.error == mod.TIME_LIMIT for r in out)


def test_a_batch_that_raises_is_relaxed_one_by_one_and_only_the_culprit_fails(monkeypatch):
    from matinvent.oracles.mlip.batched import BatchedRelaxer

    relaxer = BatchedRelaxer(fmax=0.05, max_steps=50)
    real = relaxer._relax_batch
    culprit = tiny_structures()[1].composition

    def breaks_on_si(structures, report):
        if any(s.composition == culprit for s in structures):
            raise RuntimeError("neighbour list exploded")
        return real(structures, report)

    monkeypatch.setattr(relaxer, "_relax_batch", breaks_on_si)
    out = relaxer.relax(tiny_structures())
    assert out[0].ok and out[2].ok
    assert out[1].structure is None and math.isnan(out[1].energy_per_atom)
    assert out[1].error == "RuntimeError: neighbour list exploded"


def test_each_result_is_reported_the_moment_its_structure_leaves_the_batch(batched):
    settled = Structure(fcc(4.257), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])  # near SevenNet-0's minimum already
    structures = [*tiny_structures()[1:], settled]
    seen = []
    out = batched.relax(structures, on_result=lambda i, r: seen.append((i, r.steps)))
    assert sorted(i for i, _ in seen) == [0, 1, 2]
    assert seen[0][0] == 2 and seen[0][1] < max(r.steps for r in out)  # last in, first out: it finished first


def test_the_relaxer_with_the_batched_engine_relaxes_once_and_serves_every_property():
    from matinvent.oracles.mlip import mlip_oracles

    structures = tiny_structures()
    batched = mlip_oracles(engine="batched", fmax=0.02, max_steps=400)
    ase = mlip_oracles(fmax=0.02, max_steps=400)
    seen = []
    relaxed = batched["formation_energy"].relaxer.relax(structures, on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2] and all(r.converged for r in relaxed)
    e_batched = batched["formation_energy"](structures)
    e_ase = ase["formation_energy"](structures)
    np.testing.assert_allclose(e_batched, e_ase, atol=0.005)  # eV/atom
    assert batched["formation_energy"].relaxer.n_relaxations == 3  # the property reused the batch's relaxations


def test_a_scorer_killed_mid_batch_keeps_what_finished_and_relaxes_only_the_rest(tmp_path, monkeypatch):
    from matinvent.scoring.oracle_cache import OracleCache
    from matinvent.scoring.scorer import Scorer
    from matinvent.scoring.tasks import task_from_dict

    task = task_from_dict({"name": "ef", "properties": {"formation_energy": {"target": "below", "threshold": 0}}})
    structures = tiny_structures()
    real_put = OracleCache.put
    puts = []

    def put_then_die(self, *args, **kwargs):
        real_put(self, *args, **kwargs)
        puts.append(args[0])
        if len(puts) == 1:
            raise KeyboardInterrupt  # the process dies right after the first result is committed

    monkeypatch.setattr(OracleCache, "put", put_then_die)
    scorer = Scorer(task, relax="mlip", cache=tmp_path / "cache.sqlite", engine="batched", fmax=0.02)
    with pytest.raises(KeyboardInterrupt):
        scorer(structures)
    monkeypatch.setattr(OracleCache, "put", real_put)
    again = Scorer(task, relax="mlip", cache=tmp_path / "cache.sqlite", engine="batched", fmax=0.02)
    scores = again(structures)
    assert again.relaxer.n_relaxations == 2  # the committed one came from the cache
    assert np.isfinite(scores.values["formation_energy"]).all()
