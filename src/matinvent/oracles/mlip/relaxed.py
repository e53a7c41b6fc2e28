"""The record of one MLIP relaxation (:class:`Relaxed`), and the right-handed cell a relaxation starts from."""

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

    ``properties`` caches what was derived from it (``formation_energy`` eV/atom, ``bulk_modulus``
    and ``shear_modulus`` GPa, ``elastic_tensor`` 6×6 Voigt GPa) so each is computed once.
    """

    structure: Any
    energy_per_atom: float
    converged: bool
    steps: int
    error: str | None = None
    properties: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.structure is not None and math.isfinite(self.energy_per_atom)
