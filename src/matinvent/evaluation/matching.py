"""Matching crystals: one representative per group of equal structures, and which are new to a reference.

Two structures match when pymatgen's ``StructureMatcher`` fits them (CDVAE's tolerances: ``stol``
0.5, ``angle_tol`` 10, ``ltol`` 0.3); only structures of the same reduced formula are compared.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from matinvent.crystal.record import Crystal


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)


def _as_structure(x: Any) -> Any:
    return x.to_structure() if isinstance(x, Crystal) else x


def unique_indices(crystals: list[Any], matcher: Any = None) -> list[int]:
    """Indices of one representative per group of matching structures (same reduced formula first).

    ``crystals``: ``Crystal`` records or pymatgen ``Structure``s; ``matcher``: a pymatgen
    ``StructureMatcher`` (default: CDVAE's tolerances).
    """
    matcher = matcher or _matcher()
    structures = [_as_structure(c) for c in crystals]
    by_formula: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(structures):
        by_formula[s.composition.reduced_formula].append(i)
    keep = []
    for idx in by_formula.values():
        reps: list[int] = []
        for i in idx:
            if not any(matcher.fit(structures[i], structures[j]) for j in reps):
                reps.append(i)
        keep.extend(reps)
    return sorted(keep)


def novel_mask(crystals: list[Any], reference: list[Any], matcher: Any = None) -> list[bool]:
    """True where a crystal matches no reference structure of the same reduced formula (inputs and
    ``matcher`` as :func:`unique_indices`)."""
    matcher = matcher or _matcher()
    ref: dict[str, list[Any]] = defaultdict(list)
    for r in reference:
        s = _as_structure(r)
        ref[s.composition.reduced_formula].append(s)
    out = []
    for c in crystals:
        s = _as_structure(c)
        out.append(not any(matcher.fit(s, r) for r in ref.get(s.composition.reduced_formula, [])))
    return out
