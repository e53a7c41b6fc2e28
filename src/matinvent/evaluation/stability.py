"""Relaxation-based stability of generated crystals: E_hull, RMSD from relaxation and S.U.N.

Each structure of a seeded random subset is relaxed with an MLIP (SevenNet-0 by default, through
the shared :class:`~matinvent.oracles.mlip.MLIPRelaxer`), its formation energy is put on the MP2020
scale (:func:`~matinvent.oracles.mlip.mp2020_corrected_energy`, MP elemental references) and
compared with a convex hull of MP formation energies (:mod:`matinvent.oracles.hull`, MP-20 by default):
:func:`~matinvent.oracles.mlip.relaxed_hull_energy`, the code path of the ``e_above_hull`` oracle.

Per structure (one row each):

- ``e_form`` (eV/atom): formation energy of the relaxed structure, MP2020 scale;
- ``e_above_hull`` (eV/atom): ``PhaseDiagram.get_decomp_and_e_above_hull(..., allow_negative=True)``;
  negative values are kept (below the reference hull);
- ``hull_compounds``: compound entries of the hull inside the crystal's chemical system; with 0,
  E_hull = E_form (only the elements to compare with), so ``frac_stable_0.1_hull_covered`` gives
  the stable fraction among crystals whose system the hull samples;
- ``rmsd`` (Å): MatterGen's RMSD from relaxation: pymatgen ``StructureMatcher(ltol=0.5, stol=0.5,
  angle_tol=10, primitive_cell=True, scale=False, attempt_supercell=True).get_rms_dist`` between the
  generated and the relaxed structure, times ``(V̄/N)^(1/3)`` (V̄ the volume of the lattice with the
  averaged parameters of both cells, N the number of sites) to turn pymatgen's normalised RMS into Å.
  When the matcher finds no alignment it is capped, as in MatterGen, at ``0.5·(V̄/N)^(1/3)``;
- ``stable``: E_hull ≤ 0.1 eV/atom (MatterGen's threshold); ``on_hull``: E_hull ≤ 0 (both with
  1e-8 eV/atom of floating-point slack);
- ``unique``: the relaxed structure matches no earlier relaxed structure of the subset (pymatgen
  ``StructureMatcher()`` defaults, ltol 0.2, stol 0.3, angle_tol 5°, as MatterGen; compared within
  the same reduced formula); the first of a group of duplicates is the unique one;
- ``novel``: the relaxed structure matches no ``training`` structure of the same reduced formula
  (same matcher); None when no training set is given;
- ``sun``: stable ∧ unique ∧ novel (stable ∧ unique when no training set is given).

Undefined values are NaN (floats) or None (flags): a failed relaxation, a formation energy
without an MP2020 correction, or a composition with an element the hull lacks. ``stability_reason``
says why, and notes an unconverged relaxation or a capped RMSD.

S.U.N. Our ``sun_rate`` is MatterGen's "fraction of novel unique stable structures": stable means
E_hull ≤ 0.1 eV/atom, which papers that use a 0 eV/atom threshold for "stable" (FlowMM, …) call
*metastable* S.U.N. (mSUN). ``sun_rate_0.0`` is that strict version (E_hull ≤ 0). Both, and the
``frac_stable_*`` fractions, divide by the number of structures picked (failures count as not
stable), as MatterGen divides by the submitted jobs; means and medians are over finite values.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from tqdm.auto import tqdm

from matinvent.evaluation.matching import novel_mask, unique_indices
from matinvent.oracles.base import as_structures
from matinvent.oracles.hull import ReferenceHull, load_hull
from matinvent.oracles.mlip import MLIPRelaxer, relaxed_hull_energy, right_handed
from matinvent.oracles.mlip.batched import TIME_LIMIT

log = logging.getLogger(__name__)

STABLE_THRESHOLD = 0.1  # eV/atom above hull
ON_HULL_THRESHOLD = 0.0  # eV/atom above hull
HULL_TOL = 1e-8  # eV/atom: floating-point slack of both thresholds (pymatgen's PhaseDiagram.numerical_tol)
RMSD_STOL = 0.5  # MatterGen's MAX_RMSD, in units of (V/N)^(1/3)
FAR_BELOW_HULL = -0.1  # eV/atom; MP-20 itself has nothing below its hull: such values flag a thin hull or MLIP error
ROW_KEYS = (  # the columns of a row, in order
    "index", "formula", "e_form", "e_above_hull", "rmsd", "stable", "on_hull", "unique", "novel", "sun",
    "hull_compounds", "relax_converged", "relax_steps", "stability_reason",
)  # fmt: skip


def is_stable(e_above_hull: float) -> bool:
    """Within ``STABLE_THRESHOLD`` of the hull (eV/atom, with ``HULL_TOL`` of floating-point slack)."""
    return e_above_hull <= STABLE_THRESHOLD + HULL_TOL


def pick_indices(n_total: int, n: int, seed: int = 0) -> list[int]:
    """A seeded random subset of ``min(n, n_total)`` positions in ``range(n_total)``, sorted."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    k = min(n, n_total)
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_total, size=k, replace=False))


def relaxation_rmsd(generated: Structure, relaxed: Structure) -> tuple[float, bool]:
    """RMS displacement (Å) from ``generated`` to ``relaxed`` and whether the matcher aligned them.

    MatterGen's definition (module docstring); an unaligned pair gets the cap ``0.5·(V̄/N)^(1/3)``.
    """
    matcher = StructureMatcher(
        ltol=0.5, stol=RMSD_STOL, angle_tol=10, primitive_cell=True, scale=False, attempt_supercell=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        match = matcher.get_rms_dist(generated, relaxed)
    params = (np.array(generated.lattice.parameters) + np.array(relaxed.lattice.parameters)) / 2
    length = (Lattice.from_parameters(*params).volume / len(generated)) ** (1 / 3)
    if match is None:
        return RMSD_STOL * length, False
    return float(match[0]) * length, True


def unique_flags(structures: list[Structure | None]) -> list[bool | None]:
    """True for the first of each group of matching structures, False for the rest, None for None
    (``matinvent.evaluation.matching.unique_indices`` with pymatgen's default ``StructureMatcher``)."""
    present = [i for i, s in enumerate(structures) if s is not None]
    keep = {present[k] for k in unique_indices([structures[i] for i in present], StructureMatcher())}
    return [None if s is None else i in keep for i, s in enumerate(structures)]


def novel_flags(structures: list[Structure | None], training: list[Any]) -> list[bool | None]:
    """True where a structure matches no training structure of the same reduced formula; None for None
    (``matinvent.evaluation.matching.novel_mask`` with pymatgen's default ``StructureMatcher``)."""
    present = [i for i, s in enumerate(structures) if s is not None]
    reference = [t for t in as_structures(training) if t is not None]
    flags = novel_mask([structures[i] for i in present], reference, StructureMatcher())
    novel = dict(zip(present, flags, strict=True))
    return [novel.get(i) for i in range(len(structures))]


def empty_row(index: int, structure: Structure | None) -> dict[str, Any]:
    """A row with every value undefined (NaN / None)."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(index=index, e_form=math.nan, e_above_hull=math.nan, rmsd=math.nan)
    row["formula"] = structure.composition.reduced_formula if structure is not None else None
    return row


def _sun(stable: bool | None, unique: bool | None, novel: bool | None, with_novelty: bool) -> bool | None:
    if stable is None or unique is None or (with_novelty and novel is None):
        return None
    return bool(stable and unique and (novel or not with_novelty))


def measure_structure(
    structure: Structure | None, index: int, relaxer: MLIPRelaxer, hull: ReferenceHull
) -> tuple[dict[str, Any], Structure | None]:
    """The row of one structure (without unique / novel / sun) and its relaxed structure (None on failure)."""
    row = empty_row(index, structure)
    reasons: list[str] = []
    r = relaxer.relaxed(structure) if structure is not None else None
    if r is None or not r.ok:
        row["stability_reason"] = f"relaxation failed: {r.error if r is not None else 'structure could not be built'}"
        return row, None
    row["relax_converged"], row["relax_steps"] = r.converged, r.steps
    if not r.converged:
        why = f"{r.error}, " if r.error else ""  # e.g. the batched engine's "time limit"
        reasons.append(f"relaxation not converged ({why}{r.steps} steps, fmax {relaxer.fmax} eV/Å)")
    energy = relaxed_hull_energy(r, relaxer, hull)  # the e_above_hull oracle's code path, and its E_form cache
    row["e_form"], row["e_above_hull"] = energy.e_form, energy.e_above_hull
    if energy.reason:
        reasons.append(energy.reason)
    if math.isfinite(energy.e_form):
        row["hull_compounds"] = hull.n_compounds(el.symbol for el in r.structure.composition.elements)
    if math.isfinite(energy.e_above_hull):
        row["stable"] = is_stable(energy.e_above_hull)
        row["on_hull"] = energy.e_above_hull <= ON_HULL_THRESHOLD + HULL_TOL
    try:
        rmsd, matched = relaxation_rmsd(right_handed(structure), r.structure)
        row["rmsd"] = rmsd
        if not matched:
            reasons.append(f"rmsd: no StructureMatcher alignment (stol {RMSD_STOL}); capped at {rmsd:.3f} Å")
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"rmsd: {type(exc).__name__}: {exc}")
    row["stability_reason"] = "; ".join(reasons) or None
    return row, r.structure


def _fraction(flags: list[bool | None], denominator: int) -> float:
    return sum(f is True for f in flags) / denominator if denominator else math.nan


def _finite(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr[np.isfinite(arr)]


def stability_metrics(
    structures: list[Structure],
    *,
    n: int,
    seed: int = 0,
    hull: str | Path | None = None,
    training: list[Structure] | None = None,
    progress: bool = True,
    relaxer: MLIPRelaxer | None = None,
) -> tuple[dict, list[dict]]:
    """Relax a seeded random subset of ``structures`` and measure stability, RMSD and S.U.N.

    Args:
        structures: generated crystals (pymatgen ``Structure``; matinvent ``Crystal`` also works).
        n: how many to relax (``min(n, len(structures))``, picked by :func:`pick_indices`).
        seed: seed of the subset.
        hull: a hull CSV (:mod:`matinvent.oracles.hull`); None = the shipped MP-20 hull.
        training: reference structures for novelty; None = novelty not measured, S.U.N. counts
            stable ∧ unique only (``summary["sun_novelty_reference"]`` is then None).
        progress: show a tqdm bar that moves once per relaxed structure.
        relaxer: the :class:`MLIPRelaxer` to use (and whose cache to share); default SevenNet-0, one structure at
            a time (ASE). One with ``engine="batched"`` relaxes the whole subset at once first (torch-sim).

    Returns:
        ``(summary, rows)``. ``summary``: ``n_requested``, ``n_selected``, ``n_relaxed``,
        ``n_failed`` (relaxation failed), ``n_e_above_hull`` (finite E_hull), ``frac_stable_0.1``
        (E_hull ≤ 0.1 eV/atom), ``frac_stable_0.0``, ``mean_e_above_hull``, ``median_e_above_hull`` (eV/atom),
        ``mean_rmsd``, ``median_rmsd`` (Å), ``frac_unique``, ``frac_novel`` (over the relaxed ones; NaN without
        ``training``), ``sun_rate``, ``sun_rate_0.0``, ``sun_novelty_reference``, and the settings
        (``stable_threshold`` eV/atom, ``hull``, ``model``, ``seed``). ``rows``: one dict per picked
        structure, in input order, with ``index`` (position in ``structures``) and the columns of
        the module docstring plus ``formula``, ``relax_converged``, ``relax_steps``, ``stability_reason``.
    """
    reference = load_hull(hull)
    relaxer = relaxer if relaxer is not None else MLIPRelaxer("sevennet-0")
    picked = pick_indices(len(structures), n, seed) if structures else []
    inputs = as_structures([structures[i] for i in picked])
    rows, relaxed = [], []
    if getattr(relaxer, "engine", "ase") == "batched" and inputs:  # all at once first; the rows read the cache
        bar = tqdm(total=len(inputs), desc="stability: relaxing (batched)", unit="structure", disable=not progress)
        with bar:
            relaxer.relax([s for s in inputs if s is not None], on_result=lambda *_: bar.update(1))
    with tqdm(total=len(picked), desc="stability: measuring", unit="structure", disable=not progress) as bar:
        for i, s in zip(picked, inputs, strict=True):
            try:
                row, final = measure_structure(s, i, relaxer, reference)
            except Exception as exc:  # noqa: BLE001 - never abort the batch
                log.warning("stability of structure %d failed: %s: %s", i, type(exc).__name__, exc)
                row, final = empty_row(i, s), None
                row["stability_reason"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            relaxed.append(final)
            bar.update(1)
            bar.set_postfix(failed=sum(f is None for f in relaxed), stable=sum(r.get("stable") is True for r in rows))

    unique = unique_flags(relaxed)
    with_novelty = training is not None
    novel = novel_flags(relaxed, training) if with_novelty else [None] * len(relaxed)
    sun_0 = []
    for row, u, nv in zip(rows, unique, novel, strict=True):
        row["unique"], row["novel"] = u, nv
        row["sun"] = _sun(row["stable"], u, nv, with_novelty)
        sun_0.append(_sun(row["on_hull"], u, nv, with_novelty))

    k = len(rows)
    n_relaxed = sum(f is not None for f in relaxed)
    e_hull = _finite([r["e_above_hull"] for r in rows])
    rmsd = _finite([r["rmsd"] for r in rows])
    summary = {
        "n_requested": int(n),
        "n_selected": k,
        "n_relaxed": n_relaxed,
        "n_failed": k - n_relaxed,
        "n_unconverged": sum(r.get("relax_converged") is False for r in rows),  # step or time bound reached
        "n_time_limit": sum(TIME_LIMIT in (r.get("stability_reason") or "") for r in rows),
        "n_e_above_hull": int(len(e_hull)),
        "frac_stable_0.1": _fraction([r["stable"] for r in rows], k),
        "frac_stable_0.0": _fraction([r["on_hull"] for r in rows], k),
        "mean_e_above_hull": float(e_hull.mean()) if len(e_hull) else math.nan,
        "median_e_above_hull": float(np.median(e_hull)) if len(e_hull) else math.nan,
        "mean_rmsd": float(rmsd.mean()) if len(rmsd) else math.nan,
        "median_rmsd": float(np.median(rmsd)) if len(rmsd) else math.nan,
        "frac_unique": _fraction(unique, n_relaxed),
        "frac_novel": _fraction(novel, n_relaxed) if with_novelty else math.nan,
        "sun_rate": _fraction([r["sun"] for r in rows], k),
        "sun_rate_0.0": _fraction(sun_0, k),
        "n_far_below_hull": int((e_hull < FAR_BELOW_HULL).sum()),  # hull gaps or MLIP errors, not discoveries
        "n_hull_covered": sum(bool(r.get("hull_compounds")) for r in rows),
        "frac_stable_0.1_hull_covered": _fraction(
            [r["stable"] for r in rows if r.get("hull_compounds")], sum(bool(r.get("hull_compounds")) for r in rows)
        ),
        "sun_novelty_reference": f"training ({len(training)} structures)" if with_novelty else None,
        "stable_threshold": STABLE_THRESHOLD,
        "hull": reference.source,
        "model": relaxer.model,
        "seed": int(seed),
    }
    return summary, rows
