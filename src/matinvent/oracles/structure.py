"""Oracles computed directly from the structure with pymatgen: density, HHI and the number of elements."""

from __future__ import annotations

from typing import Any

import numpy as np

from matinvent.oracles.base import Oracle, finite_or_nan


class Density(Oracle):
    """Mass density in g/cm³ (pymatgen ``Structure.density``)."""

    name = "density"
    unit = "g/cm^3"
    description = "mass density from composition and cell volume (pymatgen)"

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return np.array([finite_or_nan(s.density) for s in structures])


class HHI(Oracle):
    """Herfindahl–Hirschman index of the elements' production (or reserves), weight-fraction averaged.

    pymatgen's ``HHIModel`` (Gaultois et al. 2013) returns ``None`` for elements it has no data
    for (noble gases, most elements beyond Bi): those structures get NaN.
    """

    name = "hhi"
    unit = ""
    description = "Herfindahl-Hirschman index of element production, weight-fraction averaged (pymatgen)"

    def __init__(self, kind: str = "production") -> None:
        if kind not in ("production", "reserve"):
            raise ValueError(f"HHI kind must be 'production' or 'reserve', got {kind!r}")
        self.kind = kind

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        from pymatgen.analysis.hhi import HHIModel

        model = HHIModel()
        column = 0 if self.kind == "production" else 1
        return np.array([finite_or_nan(model.get_hhi(s.composition)[column]) for s in structures])


class NumElements(Oracle):
    """Number of distinct elements in the crystal (pymatgen composition)."""

    name = "n_elements"
    unit = ""
    description = "number of distinct elements (pymatgen)"

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return np.array([float(len(s.composition.elements)) for s in structures])
