"""Stability of a structure *as given*: one batched MLIP single point, no relaxation.

The cheap stability signals of the stability reward (task ``stability``): for a whole batch of
generated crystals at once (:meth:`~matinvent.oracles.mlip.batched.BatchedRelaxer.single_points`,
torch-sim), read off

- ``static_e_above_hull`` (eV/atom): the energy above the shipped MP-20 hull of the unrelaxed
  structure, on the MP2020 scale of the relaxed oracles. Relaxing only lowers the energy, so it is an
  upper bound of the relaxed E_hull (up to the relaxation's own convergence) and rewards geometry near
  a minimum directly;
- ``max_force`` (eV/Å): the largest atomic force, zero at a minimum.

Both oracles of one process share one :class:`StaticPoints` per model and device, which keeps the
last single points by structure, so a task with both properties calls the model once per crystal.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import numpy as np

from matinvent.crystal.structure_hash import structure_key
from matinvent.oracles.base import Oracle
from matinvent.oracles.mlip.batched import BatchedRelaxer, SinglePoint
from matinvent.oracles.mlip.calculators import model_spec
from matinvent.oracles.mlip.energies import relaxed_hull_energy
from matinvent.oracles.mlip.relaxed import Relaxed


class StaticPoints:
    """Batched single points of one MLIP, the last ``keep`` of them remembered by structure."""

    def __init__(self, model: str = "sevennet-0", device: str = "cpu", keep: int = 4096) -> None:
        self.engine = BatchedRelaxer(model=model, device=device)
        self.mp2020_correction = model_spec(model).mp2020_correction  # the energy scale (EnergyScale protocol)
        self.keep = keep
        self._memo: OrderedDict[str, SinglePoint] = OrderedDict()

    def points(self, structures: list[Any]) -> list[SinglePoint]:
        """One :class:`SinglePoint` per structure (NaN energy + reason where it failed); new ones in one call."""
        keys = [structure_key(s) for s in structures]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        fresh = dict(zip(todo, self.engine.single_points([structures[i] for i in todo]), strict=True)) if todo else {}
        out = []
        for i, k in enumerate(keys):
            if i in fresh:
                self._memo[k] = fresh[i]
                while len(self._memo) > self.keep:
                    self._memo.popitem(last=False)
            out.append(fresh.get(i) or self._memo[k])
        return out

    def e_above_hull(self, structures: list[Any], hull: Any = None) -> np.ndarray:
        """E_hull (eV/atom) of each structure as given; NaN where the single point or the hull fails (the relaxed
        oracles' code path, :func:`~matinvent.oracles.mlip.energies.relaxed_hull_energy`, on the unrelaxed energy)."""
        return np.array(
            [
                relaxed_hull_energy(Relaxed(s, p.energy_per_atom, True, 0), self, hull).e_above_hull
                if math.isfinite(p.energy_per_atom)
                else np.nan
                for s, p in zip(structures, self.points(structures), strict=True)
            ]
        )

    def max_force(self, structures: list[Any]) -> np.ndarray:
        """The largest atomic force norm (eV/Å) of each structure as given; NaN where the single point failed."""
        return np.array(
            [
                float(np.linalg.norm(p.forces, axis=1).max()) if p.forces is not None and len(p.forces) else np.nan
                for p in self.points(structures)
            ]
        )


@lru_cache(maxsize=4)
def static_points(model: str = "sevennet-0", device: str = "cpu") -> StaticPoints:
    """The process's shared :class:`StaticPoints` of ``model`` on ``device``."""
    return StaticPoints(model, device)


class MLIPStaticEnergyAboveHull(Oracle):
    """Energy above the MP-20 hull of the unrelaxed structure from one MLIP single point, eV/atom."""

    name = "static_e_above_hull"
    unit = "eV/atom"
    description = "energy above the MP-20 hull of the structure as generated (one SevenNet-0 single point)"

    def __init__(self, model: str = "sevennet-0", device: str = "cpu", hull: Any = None) -> None:
        self.points = static_points(model, device)
        self.hull = hull

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return self.points.e_above_hull(structures, self.hull)


class MLIPMaxForce(Oracle):
    """Largest atomic force of the unrelaxed structure from one MLIP single point, eV/Å (0 at a minimum)."""

    name = "max_force"
    unit = "eV/A"
    description = "largest atomic force of the structure as generated: one SevenNet-0 single point"

    def __init__(self, model: str = "sevennet-0", device: str = "cpu") -> None:
        self.points = static_points(model, device)

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return self.points.max_force(structures)
