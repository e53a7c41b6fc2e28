"""The oracle protocol: a named, unit-carrying property predictor over a batch of structures.

Like an ASE calculator, an oracle is one small object: ``oracle(structures) -> np.ndarray`` of
float64, one value per structure, ``NaN`` where the prediction failed. One bad structure never
raises: when the batched evaluation fails, the oracle retries structure by structure and marks
only the failing ones NaN.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from matinvent.crystal import Crystal

log = logging.getLogger(__name__)

StructureLike = Any  # pymatgen Structure or matinvent Crystal


def as_structures(structures: Sequence[StructureLike]) -> list[Any]:
    """pymatgen ``Structure`` objects (``None`` stays ``None``: a structure that could not be built)."""
    out = []
    for s in structures:
        if s is None:
            out.append(None)
        elif isinstance(s, Crystal):
            try:
                out.append(s.to_structure())
            except Exception:  # noqa: BLE001 - a broken record is a failed evaluation, not a crash
                out.append(None)
        else:
            out.append(s)
    return out


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
                log.warning("oracle '%s' failed on %s: %s", self.name, chunk[0].composition.reduced_formula, exc)
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
