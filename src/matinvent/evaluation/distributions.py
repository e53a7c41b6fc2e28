"""Distributions of a crystal set and their distances to a reference.

Density and distinct elements per crystal (compared by 1-D Wasserstein distances), and the
element frequencies (compared by the total-variation distance).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from pymatgen.core import Composition, Element, Structure

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


def fraction_equal(counts: Sequence[int], k: int) -> float | None:
    """Fraction of ``counts`` equal to ``k`` (``None`` for an empty list)."""
    return sum(n == k for n in counts) / len(counts) if counts else None


def element_set(item: Crystal | Structure | Composition) -> frozenset[str]:
    """Symbols of the distinct elements of a crystal, structure or composition."""
    if isinstance(item, Crystal):
        return frozenset(Element.from_Z(z).symbol for z in set(item.Z.tolist()))
    comp = item.composition if isinstance(item, Structure) else item
    return frozenset(el.symbol for el in comp.elements)


def element_frequencies(items: Iterable[Crystal | Structure | Composition]) -> dict[str, float]:
    """Frequency of each element by crystals that contain it, normalised to sum to 1.

    ``p_X = #{crystals containing X} / Σ_Y #{crystals containing Y}``: each crystal counts once
    per distinct element, whatever its stoichiometry (NaCl₃ and NaCl weigh the same). Empty → ``{}``.
    """
    counts = Counter(el for item in items for el in element_set(item))
    total = sum(counts.values())
    return {el: n / total for el, n in sorted(counts.items())}


def element_freq_distance(
    a: Iterable[Crystal | Structure | Composition], b: Iterable[Crystal | Structure | Composition]
) -> float | None:
    """Total-variation distance ``½ Σ_X |p_X − q_X|`` (in [0, 1]) between the :func:`element_frequencies`
    of two sets; ``None`` when either is empty."""
    p, q = element_frequencies(a), element_frequencies(b)
    if not p or not q:
        return None
    return 0.5 * sum(abs(p.get(el, 0.0) - q.get(el, 0.0)) for el in p.keys() | q.keys())


def wasserstein(a: Sequence[float], b: Sequence[float]) -> float | None:
    """1-D Wasserstein distance between two samples (``None`` when either is empty or it is not finite)."""
    from scipy.stats import wasserstein_distance

    if len(a) == 0 or len(b) == 0:
        return None
    d = float(wasserstein_distance(a, b))
    return d if math.isfinite(d) else None
