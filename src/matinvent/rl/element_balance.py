"""Element balance: damp the reward of crystals made of elements the run already over-uses.

A guard against the reward hacking of issue 32: an agent aligned for stability drifted to F, Cu,
In, Tl and Hg (element-frequency distance to MP-20 0.17 → 0.51) while the composition-level
diversity filter saw only new formulas. This filter works one level down, on elements.

``p_X`` is the reference frequency of element X (share of element occurrences, each crystal counting
once per distinct element: :func:`matinvent.evaluation.distributions.element_frequencies`; MP-20 by
default, ``data/mp20_element_frequencies.json``). ``q_X`` is the same frequency over the last
``window`` crystals the run evaluated *before* the crystal at hand, smoothed toward ``p`` with
``pseudo`` occurrences so that a young run is not judged on a handful of crystals:

    q_X = (c_X + pseudo · p_X) / (Σ_Y c_Y + pseudo)

A crystal with element set S has its reward multiplied by

    Π_{X ∈ S} min(1, p_X / q_X)^γ          (γ = ``strength``; elements absent from p count as p_X = min p)

so an element the run generates at k times its reference frequency costs a factor k^−γ, and elements at
or below their reference cost nothing. Crystals are counted in evaluation order (the diversity filter's rule).

``reference="start"`` guards against drift only: p is frozen from the run's own first ``window`` evaluated
crystals (the prior's chemistry, as the agent starts from it), and until then every factor is 1. Against
MP-20 (the default) the filter also pushes back on where the prior itself differs from MP-20 — on
``mp20_masked`` (element-frequency distance 0.17) that halved the mean reward of a stability alignment
from its first iteration (docs/priors.md).
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np


def reference_frequencies(path: str | Path | None = None) -> dict[str, float]:
    """Element → reference frequency from a JSON file with a ``frequencies`` mapping (default: MP-20 train)."""
    if path is None:
        path = Path(str(resources.files("matinvent") / "data" / "mp20_element_frequencies.json"))
    try:
        data = json.loads(Path(path).read_text())
        freq = {str(k): float(v) for k, v in data["frequencies"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an element-frequency file (JSON with a 'frequencies' mapping): {exc}") from exc
    total = sum(freq.values())
    if not freq or total <= 0 or any(v < 0 for v in freq.values()):
        raise ValueError(f"{path}: element frequencies must be non-negative and not all zero")
    return {k: v / total for k, v in freq.items()}


class ElementBalance:
    def __init__(
        self,
        strength: float,
        window: int = 1000,
        pseudo: float = 100.0,
        reference: dict[str, float] | str | None = None,
    ) -> None:
        if strength < 0 or window < 1 or pseudo <= 0:
            raise ValueError(
                f"element balance needs strength >= 0, window >= 1, pseudo > 0; got {strength}, {window}, {pseudo}"
            )
        self.strength, self.window, self.pseudo = float(strength), int(window), float(pseudo)
        self.from_start = reference == "start"
        if isinstance(reference, str) and not self.from_start:
            raise ValueError(f"element balance reference must be a mapping, None (MP-20) or 'start', got {reference!r}")
        self.p: dict[str, float] = {}
        if not self.from_start:
            self._set_reference(reference if reference is not None else reference_frequencies())
        self.recent: deque[tuple[str, ...]] = deque()
        self.counts: Counter[str] = Counter()

    def _set_reference(self, p: dict[str, float]) -> None:
        self.p = dict(p)
        self.p_floor = min(v for v in self.p.values() if v > 0)

    def q(self, element: str) -> float:
        """The run's smoothed frequency of ``element`` over the window so far."""
        p = self.p.get(element, self.p_floor)
        return (self.counts[element] + self.pseudo * p) / (sum(self.counts.values()) + self.pseudo)

    def factor(self, elements: Iterable[str]) -> float:
        """The reward factor of a crystal with these (distinct) elements, given the window so far."""
        if not self.p:  # reference "start", not frozen yet
            return 1.0
        f = 1.0
        for el in set(elements):
            p = self.p.get(el, self.p_floor)
            f *= min(1.0, p / self.q(el)) ** self.strength
        return f

    def add(self, elements: Iterable[str]) -> None:
        """Count one evaluated crystal (the oldest leaves the window once it is full)."""
        key = tuple(sorted(set(elements)))
        self.recent.append(key)
        self.counts.update(key)
        if len(self.recent) > self.window:
            self.counts.subtract(self.recent.popleft())
            self.counts += Counter()  # drop zero counts
        if self.from_start and not self.p and len(self.recent) == self.window:
            total = sum(self.counts.values())
            if total:
                self._set_reference({el: c / total for el, c in self.counts.items()})

    def __call__(self, element_sets: Sequence[Iterable[str]], rewards: Sequence[float]) -> np.ndarray:
        """Balanced rewards, crystal by crystal in order; records each crystal as evaluated."""
        out = np.empty(len(element_sets))
        for i, (els, r) in enumerate(zip(element_sets, rewards, strict=True)):
            els = tuple(els)
            out[i] = float(r) * self.factor(els)
            self.add(els)
        return out

    def state_dict(self) -> dict:
        return {"recent": [list(k) for k in self.recent], "reference": self.p if self.from_start else None}

    def load_state_dict(self, state: dict) -> None:
        self.recent, self.counts = deque(), Counter()
        if self.from_start:
            self.p = {}
            if state.get("reference"):  # frozen from crystals that may have left the window since
                self._set_reference(state["reference"])
        for key in state["recent"]:
            self.add(key)
