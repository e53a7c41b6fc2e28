"""Distributions of a crystal set: density and distinct elements per crystal, and their distances to a reference."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from matinvent.crystal.record import Crystal

MANY_ELEMENTS = 5  # "many": more than this many distinct elements (MP-20 val: 0.1 % has 6, none more)


def density(crystal: Crystal) -> float:
    """Mass density in g/cm³ (pymatgen, as the ``density`` oracle)."""
    return float(crystal.to_structure().density)


def num_elements(crystal: Crystal) -> int:
    """Distinct elements of one crystal."""
    return len(set(crystal.Z.tolist()))


def n_elements_histogram(counts: Sequence[int]) -> dict[str, int]:
    """``{"1": n_1, "2": n_2, …, str(max): n_max}``: crystals with k distinct elements, k = 1..max (zeros kept)."""
    if not counts:
        return {}
    c = Counter(counts)
    return {str(k): c.get(k, 0) for k in range(1, max(counts) + 1)}


def fraction_above(counts: Sequence[int], k: int = MANY_ELEMENTS) -> float | None:
    """Fraction of ``counts`` greater than ``k`` (``None`` for an empty list)."""
    return sum(n > k for n in counts) / len(counts) if counts else None


def wasserstein(a: Sequence[float], b: Sequence[float]) -> float | None:
    """1-D Wasserstein distance between two samples (``None`` when either is empty or it is not finite)."""
    from scipy.stats import wasserstein_distance

    if len(a) == 0 or len(b) == 0:
        return None
    d = float(wasserstein_distance(a, b))
    return d if math.isfinite(d) else None
