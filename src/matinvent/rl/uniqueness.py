"""What counts as "the same crystal" for distinct hits, the Diversity ratio and the diversity filter.

- ``formula`` (the paper's and the official code's): crystals are the same when their reduced formulas
  are; a polymorph of a known hit is no new hit, and the filter damps every polymorph of a formula.
- ``structure``: the same reduced formula *and* the same structure by pymatgen's ``StructureMatcher``
  (its default tolerances: ltol 0.2, stol 0.3, angle_tol 5°, primitive cells, scale on); each new
  polymorph of a formula is a class of its own, keyed ``formula#k`` (k = 0, 1, … in order of arrival).

:class:`UniqueKeys` hands out the keys in evaluation order; its state is the representatives (as CIFs),
so a resumed run gives every later crystal the key an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

UNIQUE_BY = ("formula", "structure")


class UniqueKeys:
    """The key of each evaluated crystal under ``mode`` (:data:`UNIQUE_BY`)."""

    def __init__(self, mode: str = "formula") -> None:
        if mode not in UNIQUE_BY:
            raise ValueError(f"unique_by must be one of {', '.join(UNIQUE_BY)}, got {mode!r}")
        self.mode = mode
        self._reps: dict[str, list[Any]] = {}  # formula -> one representative Structure per class
        self._matcher: Any = None

    def _fit(self) -> Callable[[Any, Any], bool]:
        if self._matcher is None:
            from pymatgen.analysis.structure_matcher import StructureMatcher

            self._matcher = StructureMatcher()
        return self._matcher.fit

    def key(self, formula: str, structure: Any = None) -> str:
        """``formula``, or ``formula#k`` of the first known class ``structure`` matches (a new class if none).

        Under ``structure`` mode a missing structure is a class of its own that matches nothing later
        (it cannot be compared), keyed like any other.
        """
        if self.mode == "formula":
            return formula
        reps = self._reps.setdefault(formula, [])
        if structure is not None:
            fit = self._fit()
            for k, rep in enumerate(reps):
                if rep is not None and fit(rep, structure):
                    return f"{formula}#{k}"
        reps.append(structure)
        return f"{formula}#{len(reps) - 1}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reps": {f: [s.to(fmt="cif") if s is not None else None for s in reps] for f, reps in self._reps.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from pymatgen.core import Structure

        self.mode = state["mode"]
        self._reps = {
            f: [Structure.from_str(c, fmt="cif") if c is not None else None for c in reps]
            for f, reps in state["reps"].items()
        }
