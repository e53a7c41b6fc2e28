"""Diversity filter: damp the reward of compositions the run has already evaluated many times.

``Occ`` is how many times a reduced formula was evaluated *before* the crystal at hand (so the
first crystal of a formula has Occ = 0). The filtered reward is

    r                              if Occ ≤ Tol
    r · (Buff − Occ) / (Buff − Tol)  if Tol < Occ < Buff      (linear decay; the paper prints
    0                              if Occ ≥ Buff               the factor upside down)

Counts are updated crystal by crystal in evaluation order, so duplicates inside one batch are
damped too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


class DiversityFilter:
    def __init__(self, tol: int, buff: int) -> None:
        """``tol``, ``buff``: Tol and Buff above (defaults live in ``RLConfig.df_tol``, ``df_buff``)."""
        if not 0 <= tol < buff:
            raise ValueError(f"diversity filter needs 0 <= tol < buff, got tol={tol}, buff={buff}")
        self.tol, self.buff = tol, buff
        self.counts: Counter[str] = Counter()

    def factor(self, occ: int) -> float:
        if occ <= self.tol:
            return 1.0
        if occ >= self.buff:
            return 0.0
        return (self.buff - occ) / (self.buff - self.tol)

    def __call__(self, formulas: Sequence[str], rewards: Sequence[float]) -> np.ndarray:
        """Filtered rewards; records each formula as evaluated once."""
        out = np.empty(len(formulas))
        for i, (f, r) in enumerate(zip(formulas, rewards, strict=True)):
            out[i] = float(r) * self.factor(self.counts[f])
            self.counts[f] += 1
        return out

    def saturated(self) -> set[str]:
        """Formulas whose next occurrence would get reward 0 (Occ ≥ Buff)."""
        return {f for f, c in self.counts.items() if c >= self.buff}

    def state_dict(self) -> dict:
        return {"tol": self.tol, "buff": self.buff, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.tol, self.buff = int(state["tol"]), int(state["buff"])
        self.counts = Counter({str(k): int(v) for k, v in state["counts"].items()})
