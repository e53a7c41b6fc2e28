"""The oracle protocol: a named, unit-carrying property predictor over a batch of structures.

Like an ASE calculator, an oracle is one small object: ``oracle(structures) -> np.ndarray`` of
float64, one value per structure, ``NaN`` where the prediction failed. One bad structure never
raises: when the batched evaluation fails, the oracle retries structure by structure and marks
only the failing ones NaN. Structures may be pymatgen ``Structure``, ASE ``Atoms`` (with a 3-D
cell) or matinvent ``Crystal`` objects, mixed freely (:func:`as_structures`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from matinvent.crystal.record import Crystal

log = logging.getLogger(__name__)

StructureLike = Any  # pymatgen Structure, ASE Atoms (3-D periodic cell) or matinvent Crystal


def as_structure(s: StructureLike) -> Any:
    """A pymatgen ``Structure`` for a ``Structure``, an ASE ``Atoms`` or a ``Crystal``; ``None`` for ``None``
    or a record that cannot be built (a singular or missing cell, an unknown element).

    Raises ``TypeError`` naming the type for anything else.
    """
    if s is None:
        return None
    if hasattr(s, "lattice") and hasattr(s, "frac_coords"):  # pymatgen (I)Structure
        return s
    if not isinstance(s, Crystal):
        from ase import Atoms

        if not isinstance(s, Atoms):
            raise TypeError(
                f"expected a pymatgen Structure, an ASE Atoms or a matinvent Crystal, got {type(s).__name__}"
            )
        try:
            s = Crystal.from_atoms(s, max_atoms=None)
        except Exception as exc:  # noqa: BLE001 - a broken record is a failed evaluation, not a crash
            log.warning("ASE Atoms %s cannot be a crystal: %s", s.get_chemical_formula(), exc)
            return None
    try:
        return s.to_structure()
    except Exception:  # noqa: BLE001
        return None


def as_structures(structures: Sequence[StructureLike]) -> list[Any]:
    """:func:`as_structure` of each item (``None`` stays ``None``: a structure that could not be built)."""
    out = []
    for i, s in enumerate(structures):
        try:
            out.append(as_structure(s))
        except TypeError as exc:
            raise TypeError(f"structure {i}: {exc}") from None
    return out


def describe(structure: Any) -> str:
    """A short label for log messages: the reduced formula, else the type name (never raises)."""
    try:
        return str(structure.composition.reduced_formula)
    except Exception:  # noqa: BLE001
        return type(structure).__name__


class Oracle:
    """Base class: subclasses set ``name``/``unit`` and implement ``evaluate`` on a list of Structures.

    ``evaluate`` may raise; ``__call__`` turns any failure into NaN for the structures concerned.
    """

    name: str = ""
    unit: str = ""
    description: str = ""
    batch_size: int = 256

    def evaluate(self, structures: list[Any]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, structures: Sequence[StructureLike]) -> np.ndarray:
        structs = as_structures(list(structures))
        out = np.full(len(structs), np.nan)
        ok = [i for i, s in enumerate(structs) if s is not None]
        for start in range(0, len(ok), self.batch_size):
            idx = ok[start : start + self.batch_size]
            out[idx] = self._evaluate_chunk([structs[i] for i in idx])
        return out

    def _evaluate_chunk(self, chunk: list[Any]) -> np.ndarray:
        try:
            values = np.asarray(self.evaluate(chunk), dtype=np.float64).reshape(-1)
            if len(values) != len(chunk):
                raise ValueError(f"oracle '{self.name}' returned {len(values)} values for {len(chunk)} structures")
            return values
        except Exception as exc:  # noqa: BLE001
            if len(chunk) == 1:
                log.warning("oracle '%s' failed on %s: %s", self.name, describe(chunk[0]), exc)
                return np.array([np.nan])
            return np.concatenate([self._evaluate_chunk([s]) for s in chunk])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, unit={self.unit!r})"


def finite_or_nan(value: Any) -> float:
    """``float(value)``, or NaN for None / non-numeric / infinite values."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan
