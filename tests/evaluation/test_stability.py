"""Relaxation-based stability metrics: E_hull, RMSD from relaxation, uniqueness, novelty, S.U.N.

The bookkeeping is tested with a stub relaxer (no MLIP); one module-scoped run relaxes rocksalt
MgO, diamond Si and a strained, perturbed NaCl with SevenNet-0 (skipped without the mlip extra).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matinvent.evaluation import stability
from matinvent.oracles.mlip import MLIPRelaxer, Relaxed, mp_elemental_references

needs_sevenn = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra (sevenn)")

SUMMARY_KEYS = {
    "n_requested", "n_selected", "n_relaxed", "n_failed", "n_e_above_hull", "frac_stable_0.1", "frac_stable_0.0",
    "mean_e_above_hull", "median_e_above_hull", "mean_rmsd", "median_rmsd", "frac_unique", "frac_novel", "sun_rate",
    "sun_rate_0.0", "sun_novelty_reference", "stable_threshold", "hull", "model", "seed", "n_hull_covered",
    "frac_stable_0.1_hull_covered", "n_far_below_hull", "n_unconverged", "n_time_limit",
}  # fmt: skip


def fcc(a: float) -> Lattice:
    """Primitive fcc cell of a cubic lattice constant a (Å)."""
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def rocksalt(a: float, cation: str, anion: str) -> Structure:
    return Structure(fcc(a), [cation, anion], [[0, 0, 0], [0.5] * 3])


def diamond_si(a: float = 5.468) -> Structure:
    return Structure(fcc(a), ["Si", "Si"], [[0] * 3, [0.25] * 3])


def perturbed_nacl() -> Structure:
    """Rocksalt NaCl with a 1–3 % strained cell and Cl moved ≈ 0.25 Å off its site."""
    strained = fcc(5.69).matrix @ (np.eye(3) + np.diag([0.03, -0.02, 0.01]))
    return Structure(Lattice(strained), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.47, 0.54]])


class StubRelaxer:
    """Returns each structure unchanged as 'relaxed', at a chosen formation energy per formula (eV/atom)."""

    model = "stub"
    fmax = 0.05
    mp2020_correction = False

    def __init__(self, e_form: dict[str, float]) -> None:
        self.e_form = e_form
        self.calls = 0

    def relaxed(self, s: Structure) -> Relaxed:
        self.calls += 1
        formula = s.composition.reduced_formula
        if formula not in self.e_form:
            return Relaxed(None, math.nan, False, 0, f"stub cannot relax {formula}")
        refs = mp_elemental_references()
        mu = sum(refs.get(el.symbol, 0.0) * n for el, n in s.composition.items()) / s.composition.num_atoms
        return Relaxed(s.copy(), mu + self.e_form[formula], True, 3)


class ShiftingStubRelaxer(StubRelaxer):
    """As :class:`StubRelaxer`, but 'relaxation' moves the last site by a chosen distance per formula (Å, along x)."""

    def __init__(self, e_form: dict[str, float], shift: dict[str, float]) -> None:
        super().__init__(e_form)
        self.shift = shift

    def relaxed(self, s: Structure) -> Relaxed:
        r = super().relaxed(s)
        if r.structure is not None:
            r.structure.translate_sites([len(s) - 1], [self.shift[s.composition.reduced_formula], 0, 0], False)
        return r


# ----------------------------------------------------------------------------- no MLIP


def test_pick_indices_is_a_seeded_subset():
    a = stability.pick_indices(50, 10, seed=0)
    assert a == stability.pick_indices(50, 10, seed=0) == sorted(set(a)) and len(a) == 10
    assert a != stability.pick_indices(50, 10, seed=1)
    assert stability.pick_indices(3, 10) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 1"):
        stability.pick_indices(3, 0)


def test_relaxation_rmsd_is_in_angstrom():
    cubic = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    moved = cubic.copy()
    moved.translate_sites([1], [0.1, 0, 0], frac_coords=False)  # Cl by 0.1 Å: each atom 0.05 Å off the mean
    assert stability.relaxation_rmsd(cubic, cubic) == (pytest.approx(0.0, abs=1e-8), True)
    rmsd, matched = stability.relaxation_rmsd(cubic, moved)
    assert matched and rmsd == pytest.approx(0.05, abs=1e-6)
    elongated = Structure(Lattice.tetragonal(5.0, 9.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rmsd, matched = stability.relaxation_rmsd(cubic, elongated)  # c 80 % longer: beyond ltol 0.5
    assert not matched and rmsd == pytest.approx(0.5 * (5 * 5 * 7 / 2) ** (1 / 3))  # MatterGen's cap, Å


def test_bookkeeping_with_a_stub_relaxer():
    mgo, nacl, si = rocksalt(4.257, "Mg", "O"), rocksalt(5.69, "Na", "Cl"), diamond_si()
    mgpo = rocksalt(5.0, "Mg", "Po")  # Po: no MP elemental reference, so no formation energy
    relaxer = StubRelaxer({"MgO": -3.053367, "NaCl": -2.109608 + 0.05, "Si": 0.3, "MgPo": -0.1})
    structures = [mgo, nacl, si, mgo.copy(), mgpo, rocksalt(4.0, "K", "I")]  # KI: the stub fails
    summary, rows = stability.stability_metrics(
        structures, n=10, relaxer=relaxer, training=[nacl, si.copy()], progress=False
    )
    assert set(summary) == SUMMARY_KEYS and [r["index"] for r in rows] == list(range(6))
    assert list(rows[0]) == list(stability.ROW_KEYS)
    assert summary["n_selected"] == 6 and summary["n_relaxed"] == 5 and summary["n_failed"] == 1
    mgo_row, nacl_row, si_row, dup_row, mgpo_row, failed = rows
    assert mgo_row["e_above_hull"] == pytest.approx(0.0, abs=1e-5) and mgo_row["on_hull"] and mgo_row["sun"]
    assert nacl_row["e_above_hull"] == pytest.approx(0.05, abs=1e-5) and nacl_row["stable"] and not nacl_row["on_hull"]
    assert nacl_row["novel"] is False and nacl_row["sun"] is False  # in training
    assert si_row["stable"] is False and si_row["novel"] is False
    assert dup_row["unique"] is False and dup_row["sun"] is False and mgo_row["unique"] is True
    assert math.isnan(mgpo_row["e_form"]) and mgpo_row["stable"] is None and mgpo_row["unique"] is True
    assert "formation energy" in mgpo_row["stability_reason"] and "Po" in mgpo_row["stability_reason"]
    assert (
        math.isnan(failed["e_form"])
        and failed["unique"] is None
        and "stub cannot relax KI" in failed["stability_reason"]
    )
    assert summary["frac_stable_0.1"] == pytest.approx(3 / 6) and summary["frac_stable_0.0"] == pytest.approx(2 / 6)
    assert summary["sun_rate"] == pytest.approx(1 / 6) and summary["sun_rate_0.0"] == pytest.approx(1 / 6)
    assert summary["frac_unique"] == pytest.approx(4 / 5) and summary["frac_novel"] == pytest.approx(3 / 5)
    assert summary["sun_novelty_reference"] == "training (2 structures)" and summary["model"] == "stub"
    assert summary["mean_rmsd"] == pytest.approx(0.0, abs=1e-8) and summary["n_e_above_hull"] == 4

    # without a training set: novelty NaN / None, S.U.N. = stable ∧ unique
    summary, rows = stability.stability_metrics(structures, n=10, relaxer=relaxer, progress=False)
    assert math.isnan(summary["frac_novel"]) and summary["sun_novelty_reference"] is None
    assert all(r["novel"] is None for r in rows)
    assert [r["sun"] for r in rows] == [True, True, False, False, None, None]

    # a seeded subset, reported at the input positions
    summary, rows = stability.stability_metrics(structures, n=3, seed=4, relaxer=relaxer, progress=False)
    assert [r["index"] for r in rows] == stability.pick_indices(6, 3, seed=4) and summary["n_selected"] == 3


class BoundedStubRelaxer(StubRelaxer):
    """As :class:`StubRelaxer`, but NaCl stops at the step bound and MgO at the batched engine's time limit."""

    def relaxed(self, s: Structure) -> Relaxed:
        r = super().relaxed(s)
        formula = s.composition.reduced_formula
        if formula == "NaCl":
            return Relaxed(r.structure, r.energy_per_atom, False, 300)
        if formula == "MgO":
            return Relaxed(r.structure, r.energy_per_atom, False, 5, "time limit")
        return r


def test_relaxations_stopped_by_a_bound_are_counted_and_named():
    mgo, nacl, si = rocksalt(4.257, "Mg", "O"), rocksalt(5.69, "Na", "Cl"), diamond_si()
    relaxer = BoundedStubRelaxer({"MgO": -3.05, "NaCl": -2.1, "Si": 0.3})
    summary, rows = stability.stability_metrics([mgo, nacl, si], n=3, relaxer=relaxer, progress=False)
    assert summary["n_unconverged"] == 2 and summary["n_time_limit"] == 1
    assert "time limit, 5 steps" in rows[0]["stability_reason"]
    assert "(300 steps" in rows[1]["stability_reason"] and rows[2]["stability_reason"] is None


def test_median_rmsd_is_numpys_median_of_the_finite_row_rmsds():
    structures = [rocksalt(4.257, "Mg", "O"), rocksalt(5.69, "Na", "Cl"), diamond_si(), rocksalt(4.0, "K", "I")]
    relaxer = ShiftingStubRelaxer(
        {"MgO": -3.0, "NaCl": -2.0, "Si": 0.0}, {"MgO": 0.02, "NaCl": 0.06, "Si": 0.6}
    )  # KI: the stub fails, a NaN rmsd that must not count
    summary, rows = stability.stability_metrics(structures, n=4, relaxer=relaxer, progress=False)
    rmsd = np.array([r["rmsd"] for r in rows])
    assert np.isnan(rmsd[3]) and np.all(rmsd[:3] > 0.005)
    assert summary["median_rmsd"] == pytest.approx(np.nanmedian(rmsd))
    assert summary["median_rmsd"] == pytest.approx(rmsd[1])  # the middle of three, NaCl
    assert summary["mean_rmsd"] > 1.5 * summary["median_rmsd"]  # Si's large shift pulls the mean, not the median


def test_user_hull_without_an_element(tmp_path):
    hull = tmp_path / "nacl_only.csv"
    hull.write_text("formula,e_form_per_atom\nNaCl,-2.0\n")
    relaxer = StubRelaxer({"MgO": -3.0, "NaCl": -1.9})
    structures = [rocksalt(4.257, "Mg", "O"), rocksalt(5.69, "Na", "Cl")]
    summary, rows = stability.stability_metrics(structures, n=2, hull=hull, relaxer=relaxer, progress=False)
    assert summary["hull"].endswith("nacl_only.csv") and rows[1]["e_above_hull"] == pytest.approx(0.1)
    assert math.isnan(rows[0]["e_above_hull"]) and "no hull entries contain Mg, O" in rows[0]["stability_reason"]


def test_an_exception_is_a_nan_row(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(stability, "relaxation_rmsd", broken)
    summary, rows = stability.stability_metrics(
        [rocksalt(4.257, "Mg", "O")], n=1, relaxer=StubRelaxer({"MgO": -3.0}), progress=False
    )
    assert (
        summary["n_relaxed"] == 1
        and math.isnan(rows[0]["rmsd"])
        and "rmsd: RuntimeError: boom" in rows[0]["stability_reason"]
    )
    assert rows[0]["stable"] is True  # the rest of the row stands


# ----------------------------------------------------------------------------- SevenNet-0


@pytest.fixture(scope="module")
def relaxer() -> MLIPRelaxer:
    return MLIPRelaxer("sevennet-0", max_steps=60)


@pytest.fixture(scope="module")
def sevennet_run(relaxer):
    mgo = rocksalt(4.257, "Mg", "O")
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])  # 0.2 Å apart
    structures = [mgo, diamond_si(), perturbed_nacl(), mgo.copy(), overlapping]
    return stability.stability_metrics(structures, n=5, relaxer=relaxer, training=[mgo], progress=False)


@needs_sevenn
def test_sevennet_energies_above_the_mp20_hull(sevennet_run):
    summary, rows = sevennet_run
    mgo, si, nacl = rows[0], rows[1], rows[2]
    for row in (mgo, si, nacl):
        assert abs(row["e_above_hull"]) < 0.1 and row["stable"], row
    assert mgo["e_form"] == pytest.approx(-3.05, abs=0.1)  # MP: -3.05 eV/atom (mp-1265)
    assert summary["n_relaxed"] == 4 and summary["n_failed"] == 1
    assert math.isnan(rows[4]["e_above_hull"]) and "closer than" in rows[4]["stability_reason"]


@needs_sevenn
def test_sevennet_rmsd_uniqueness_and_novelty(sevennet_run, relaxer):
    summary, rows = sevennet_run
    mgo, si, nacl, dup = rows[:4]
    assert nacl["rmsd"] > 0.02 and mgo["rmsd"] == pytest.approx(0.0, abs=1e-6)
    assert (mgo["unique"], dup["unique"]) == (True, False)
    assert (mgo["novel"], si["novel"], nacl["novel"]) == (False, True, True)
    assert (mgo["sun"], si["sun"], nacl["sun"], dup["sun"]) == (False, True, True, False)
    assert summary["frac_unique"] == pytest.approx(3 / 4) and summary["sun_rate"] == pytest.approx(2 / 5)
    # starting again from the relaxed NaCl: (almost) nothing moves
    relaxed_nacl = relaxer.relaxed(perturbed_nacl()).structure
    _, again = stability.stability_metrics([relaxed_nacl], n=1, relaxer=relaxer, progress=False)
    assert again[0]["rmsd"] < 5e-3 and again[0]["e_above_hull"] == pytest.approx(nacl["e_above_hull"], abs=2e-3)


@needs_sevenn
def test_the_batched_engine_gives_the_rows_of_the_one_at_a_time_path(sevennet_run):
    pytest.importorskip("torch_sim")
    _, rows = sevennet_run
    mgo = rocksalt(4.257, "Mg", "O")
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    structures = [mgo, diamond_si(), perturbed_nacl(), mgo.copy(), overlapping]
    batched = MLIPRelaxer("sevennet-0", max_steps=60, engine="batched")
    summary, again = stability.stability_metrics(structures, n=5, relaxer=batched, training=[mgo], progress=False)
    for a, b in zip(rows[:4], again[:4], strict=True):
        assert b["e_above_hull"] == pytest.approx(a["e_above_hull"], abs=5e-3)  # same FIRE, within 5 meV/atom
        assert b["stable"] == a["stable"] and b["unique"] == a["unique"]
    assert summary["n_failed"] == 1 and math.isnan(again[4]["e_above_hull"])
