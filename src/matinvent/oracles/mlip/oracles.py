"""The MLIP property oracles: one property each, all read off a (possibly shared) :class:`MLIPRelaxer`.

Name, unit and description are declared here, on the classes; the oracle registry
(:mod:`matinvent.oracles`) lists :class:`MLIPEnergyAboveHull` as ``e_above_hull``. The
others share their names with the CGCNN oracles and are used in their place by
``Scorer(task, relax="mlip")`` (:func:`mlip_oracles`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from matinvent.oracles.base import Oracle
from matinvent.oracles.mlip.relax import MLIPRelaxer


class _MLIPOracle(Oracle):
    """An oracle reading one property off a :class:`MLIPRelaxer` (a new SevenNet-0 one by default)."""

    _method: str = ""

    def __init__(self, relaxer: MLIPRelaxer | None = None, model: str = "sevennet-0", **relax_kwargs: Any) -> None:
        self.relaxer = relaxer if relaxer is not None else MLIPRelaxer(model=model, **relax_kwargs)

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return getattr(self.relaxer, self._method)(structures)


class MLIPEnergy(_MLIPOracle):
    """Energy per atom of the MLIP-relaxed structure, eV/atom (raw model scale)."""

    name = "energy_per_atom"
    unit = "eV/atom"
    description = "energy per atom after MLIP relaxation (SevenNet-0 / CHGNet)"
    _method = "energy_per_atom"


class MLIPFormationEnergy(_MLIPOracle):
    """Formation energy per atom of the MLIP-relaxed structure vs MP elemental references, eV/atom."""

    name = "formation_energy"
    unit = "eV/atom"
    description = "formation energy per atom after MLIP relaxation, MP2020 energy scale"
    _method = "formation_energy"


class MLIPBulkModulus(_MLIPOracle):
    """Bulk modulus of the MLIP-relaxed structure from a Birch–Murnaghan E(V) fit, GPa."""

    name = "bulk_modulus"
    unit = "GPa"
    description = "Birch-Murnaghan bulk modulus of the MLIP-relaxed structure"
    _method = "bulk_modulus"


class MLIPShearModulus(_MLIPOracle):
    """VRH shear modulus of the MLIP-relaxed structure from a finite-strain elastic tensor, GPa."""

    name = "shear_modulus"
    unit = "GPa"
    description = "Voigt-Reuss-Hill shear modulus from the MLIP finite-strain elastic tensor"
    _method = "shear_modulus"


class MLIPEnergyAboveHull(_MLIPOracle):
    """Energy above the convex hull of the MLIP-relaxed structure, eV/atom (negative: below the hull).

    SevenNet-0 relaxation, MP2020-corrected formation energy vs the MP elemental references, and
    the hull of :mod:`matinvent.oracles.hull` (``hull``: a hull CSV or ``ReferenceHull``; None = the shipped
    MP-20 hull). NaN where the relaxation fails or the hull lacks an element. The shipped hull is
    MP's thinned to MP-20, so E_hull of compositions it samples poorly can come out too low.
    """

    name = "e_above_hull"
    unit = "eV/atom"
    description = "energy above the MP-20 convex hull after MLIP relaxation (SevenNet-0, MP2020 scale)"
    _method = "e_above_hull"

    def __init__(
        self, relaxer: MLIPRelaxer | None = None, model: str = "sevennet-0", hull: Any = None, **relax_kwargs: Any
    ) -> None:
        super().__init__(relaxer, model, **relax_kwargs)
        self.hull = hull

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return self.relaxer.e_above_hull(structures, hull=self.hull)


MLIP_ORACLES: tuple[type[_MLIPOracle], ...] = (
    MLIPFormationEnergy,
    MLIPBulkModulus,
    MLIPShearModulus,
    MLIPEnergy,
    MLIPEnergyAboveHull,
)


def mlip_oracles(model: str = "sevennet-0", hull: Any = None, **relax_kwargs: Any) -> dict[str, Oracle]:
    """The MLIP oracles by name (:data:`MLIP_ORACLES`), sharing one :class:`MLIPRelaxer` (``oracle.relaxer``).

    ``hull`` goes to ``e_above_hull``; ``relax_kwargs`` to :class:`MLIPRelaxer`.
    """
    relaxer = MLIPRelaxer(model=model, **relax_kwargs)
    oracles: list[Oracle] = [cls(relaxer) for cls in MLIP_ORACLES if cls is not MLIPEnergyAboveHull]
    oracles.append(MLIPEnergyAboveHull(relaxer, hull=hull))
    return {o.name: o for o in oracles}
