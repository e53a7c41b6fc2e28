"""Formation energy and energy above the hull of one MLIP relaxation, on the MP2020 scale (eV/atom).

The one code path for E_form and E_hull of a relaxed structure: the MLIP oracles
(``formation_energy``, ``e_above_hull``), :mod:`matinvent.evaluation.stability` (prior evaluation) and,
through it, :mod:`matinvent.evaluation.recheck` call :func:`relaxed_formation_energy` and
:func:`relaxed_hull_energy`. The formation energy is cached on the :class:`Relaxed`; the hull is
:mod:`matinvent.oracles.hull`'s (the shipped MP-20 hull unless another is given).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

from matinvent.oracles.mlip.references import formation_energy_per_atom, mp2020_corrected_energy
from matinvent.oracles.mlip.relaxed import Relaxed


class EnergyScale(Protocol):
    """What the energy scale needs to know of a relaxer: whether its energies need the MP2020 correction."""

    mp2020_correction: bool


class HullEnergy(NamedTuple):
    """E_form and E_hull (eV/atom, NaN where undefined) and why one is NaN (None when both are defined)."""

    e_form: float
    e_above_hull: float
    reason: str | None


def relaxed_formation_energy(r: Relaxed, relaxer: EnergyScale) -> float:
    """Formation energy (eV/atom, MP2020 scale) of a successful relaxation, cached in ``r.properties``.

    Raises:
        ValueError: no MP2020 correction or no elemental reference for the composition.
    """
    if "formation_energy" not in r.properties:
        energy = r.energy_per_atom * len(r.structure)
        if relaxer.mp2020_correction:
            energy = mp2020_corrected_energy(r.structure, energy)
        r.properties["formation_energy"] = float(formation_energy_per_atom(r.structure, energy))
    return r.properties["formation_energy"]


def relaxed_hull_energy(r: Relaxed, relaxer: EnergyScale, hull: Any = None) -> HullEnergy:
    """E_form and the energy above ``hull`` (negative: below it) of a successful relaxation; never raises.

    ``hull``: a :class:`~matinvent.oracles.hull.ReferenceHull`, a pymatgen ``PhaseDiagram``, a hull CSV
    path, or None for the shipped MP-20 hull (:func:`matinvent.oracles.hull.e_above_hull_with_reason`).
    The reason starts with ``formation energy:`` or ``e_above_hull:``.
    """
    from matinvent.oracles.hull import e_above_hull_with_reason

    try:
        e_form = relaxed_formation_energy(r, relaxer)
    except Exception as exc:  # noqa: BLE001 - one structure never stops the batch
        return HullEnergy(math.nan, math.nan, f"formation energy: {exc}")
    e_hull, why = e_above_hull_with_reason(r.structure.composition, e_form, hull)
    return HullEnergy(e_form, e_hull, f"e_above_hull: {why}" if why else None)


def static_formation_energy(structure: Any, relaxer: Any) -> float:
    """Formation energy (eV/atom, MP2020 scale) of ``structure`` as given: one MLIP energy, no relaxation.

    For structures that are already relaxed (e.g. Materials Project's, to fill a hull): on 50 MP-20
    val rows SevenNet-0 is within 0.009 eV/atom (MAE) of MP's formation energies this way.
    ``relaxer``: an :class:`~matinvent.oracles.mlip.relax.MLIPRelaxer` (its calculator and energy scale).
    """
    atoms = relaxer.atoms(structure)
    energy = float(atoms.get_potential_energy()) / len(atoms)
    if not math.isfinite(energy):
        raise ValueError("non-finite energy")
    return relaxed_formation_energy(Relaxed(structure, energy, True, 0), relaxer)
