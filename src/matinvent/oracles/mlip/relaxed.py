"""The record of one MLIP relaxation (:class:`Relaxed`), and the checked, right-handed cell it starts from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def right_handed(structure: Any) -> Any:
    """The same crystal on a right-handed cell: a left-handed lattice has all three vectors negated."""
    from pymatgen.core import Lattice, Structure

    matrix = structure.lattice.matrix
    if np.linalg.det(matrix) >= 0:
        return structure
    return Structure(
        Lattice(-matrix),
        [site.species for site in structure],
        -structure.frac_coords,  # same Cartesian positions: (−f)·(−L) = f·L
        site_properties=structure.site_properties or None,
    )


@dataclass
class Relaxed:
    """One relaxation: the relaxed structure (None on failure), its energy (eV/atom, NaN on failure), status.

    ``initial_energy_per_atom`` is the model's energy of the structure it started from (NaN if unknown).

    ``properties`` caches what was derived from it (``formation_energy`` eV/atom, ``bulk_modulus``
    and ``shear_modulus`` GPa, ``elastic_tensor`` 6×6 Voigt GPa) so each is computed once.
    """

    structure: Any
    energy_per_atom: float
    converged: bool
    steps: int
    error: str | None = None
    initial_energy_per_atom: float = math.nan
    properties: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.structure is not None and math.isfinite(self.energy_per_atom)


def relaxable(structure: Any, min_distance: float) -> Any:
    """``structure`` on a right-handed cell, ready for an MLIP; ``ValueError`` saying why it is not (disordered,
    non-finite, singular lattice, atoms closer than ``min_distance`` Å, periodic images included)."""
    if not structure.is_ordered:
        raise ValueError("disordered structure (partial occupancies)")
    matrix = structure.lattice.matrix
    if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(structure.frac_coords))):
        raise ValueError("non-finite lattice or coordinates")
    if abs(np.linalg.det(matrix)) < 1e-6:
        raise ValueError("singular lattice")
    s = right_handed(structure)
    _, _, _, dists = s.get_neighbor_list(min_distance)
    if len(dists):
        raise ValueError(f"atoms closer than {min_distance} Å (min {float(np.min(dists)):.3g} Å)")
    return s


def site_rmsd(start: Any, end: Any) -> float:
    """Root-mean-square displacement (Å) of the sites of ``start`` to the same sites of ``end`` (same order, as a
    relaxation keeps them), on ``end``'s lattice, nearest periodic image, rigid translation removed.

    Unlike MatterGen's StructureMatcher RMSD (:func:`matinvent.evaluation.stability.relaxation_rmsd`) it needs
    no matching, so it is defined for every relaxation; a cell change alone gives 0.
    """
    if len(start) != len(end):
        raise ValueError(f"site_rmsd: {len(start)} sites vs {len(end)}")
    df = np.asarray(end.frac_coords, dtype=float) - np.asarray(start.frac_coords, dtype=float)
    df -= np.round(df)
    ref = df[0].copy()  # a shift relative to one site first, so the mean is not split by the wrap
    df = df - ref
    df -= np.round(df)
    df -= df.mean(axis=0)
    cart = df @ np.asarray(end.lattice.matrix, dtype=float)
    return float(np.sqrt(np.mean(np.sum(cart**2, axis=1))))
