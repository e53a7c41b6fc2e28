"""Property targets and rewards in [0, 1]: one property's window and ramp, and how several combine.

A target holds one property inside a window and ramps the reward linearly down to 0 outside:

- ``range``:  window ``|x − center| ≤ tolerance``;  excess ``d = |x − center| − tolerance`` (optionally with
  its own ``ramp_below`` under the window, e.g. an E_hull window whose reward vanishes fast below the hull);
- ``below``:  window ``x ≤ threshold``;            excess ``d = x − threshold``;
- ``above``:  window ``x ≥ threshold``;            excess ``d = threshold − x``;

reward = 1 inside (d ≤ 0), ``max(0, 1 − d / ramp)`` outside; NaN (a failed oracle) gives 0.
Several properties combine by ``min``, ``mean`` or ``weighted`` (Σ wᵢ rᵢ / Σ wᵢ). A *hit* is a
crystal with every property inside its window.

Stability (:func:`stability_target`, on by default with ``relax: mlip``) is one more target on the
loop's own E_hull: the task's reward is multiplied by its ramp (1 up to ``max_e_hull``, linearly
to 0 at ``max_e_hull + ramp``) and a hit also needs E_hull ≤ ``max_e_hull``; NaN E_hull gives 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGET_KINDS = ("range", "below", "above")
REDUCTIONS = ("min", "mean", "weighted")


@dataclass(frozen=True)
class Target:
    """One property's window and ramp (all in the property's unit)."""

    prop: str
    kind: str
    center: float | None = None
    tolerance: float | None = None
    threshold: float | None = None
    ramp: float = 1.0
    weight: float = 1.0
    ramp_below: float | None = None  # range only: the ramp under the window (None: ``ramp`` on both sides)

    def excess(self, values: np.ndarray) -> np.ndarray:
        """How far each value lies outside the window (≤ 0 inside; NaN stays NaN)."""
        x = np.asarray(values, dtype=np.float64)
        if self.kind == "range":
            return np.abs(x - self.center) - self.tolerance
        if self.kind == "below":
            return x - self.threshold
        return self.threshold - x

    def reward(self, values: np.ndarray) -> np.ndarray:
        d = self.excess(values)
        ramp = self.ramp
        if self.kind == "range" and self.ramp_below is not None:
            ramp = np.where(np.asarray(values, dtype=np.float64) < self.center, self.ramp_below, self.ramp)
        r = np.clip(1.0 - np.maximum(d, 0.0) / ramp, 0.0, 1.0)
        return np.where(np.isnan(d), 0.0, r)

    def inside(self, values: np.ndarray) -> np.ndarray:
        d = self.excess(values)
        return np.where(np.isnan(d), False, d <= 0.0)

    def window(self) -> str:
        if self.kind == "range":
            return f"{self.center:g} ± {self.tolerance:g}"
        return f"{'<' if self.kind == 'below' else '>'} {self.threshold:g}"


def combine(targets: tuple[Target, ...], values: dict[str, np.ndarray], reduce: str = "min") -> tuple[np.ndarray, ...]:
    """(reward, hit, failed) per crystal from ``values[prop]`` arrays of equal length, combined by ``reduce``."""
    per = np.stack([t.reward(values[t.prop]) for t in targets])
    inside = np.stack([t.inside(values[t.prop]) for t in targets])
    failed = np.stack([np.isnan(np.asarray(values[t.prop], dtype=np.float64)) for t in targets]).any(0)
    if reduce == "min":
        reward = per.min(0)
    elif reduce == "mean":
        reward = per.mean(0)
    else:
        w = np.array([t.weight for t in targets])[:, None]
        reward = (w * per).sum(0) / w.sum()
    reward = np.where(failed, 0.0, reward)
    return reward, inside.all(0) & ~failed, failed


STABILITY_PROP = "e_above_hull"


def stability_target(max_e_hull: float = 0.1, ramp: float = 0.2) -> Target:
    """The stability condition of the default hit definition: E_hull ≤ ``max_e_hull`` eV/atom, reward factor
    ramping to 0 over ``ramp`` eV/atom above it."""
    if not (np.isfinite(max_e_hull) and np.isfinite(ramp) and ramp > 0):
        raise ValueError(f"stability needs a finite max_e_hull and ramp > 0, got {max_e_hull!r}, {ramp!r}")
    return Target(STABILITY_PROP, "below", threshold=float(max_e_hull), ramp=float(ramp))


def apply_stability(
    reward: np.ndarray, hit: np.ndarray, e_hull: np.ndarray, target: Target
) -> tuple[np.ndarray, np.ndarray]:
    """(reward × the stability factor, hit ∧ E_hull inside the stability window)."""
    return reward * target.reward(e_hull), hit & target.inside(e_hull)
