"""Sample-efficiency metrics of an optimisation run (MatInvent paper, Sec. 5.2).

- *evaluations*: crystals sent to the oracles (valid ones; invalid samples cost no oracle call);
- *hits*: distinct reduced formulas among valid crystals whose every property lies in its window;
- *Burden* = evaluations spent when the ``n``-th distinct hit arrived / ``n`` (n = 100); before
  that, the running evaluations per hit is reported instead;
- *Diversity ratio* = distinct valid compositions / evaluations, taken at ``b`` = 3000
  evaluations (and reported running).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

N_HITS = 100
DIVERSITY_BUDGET = 3000


@dataclass
class RunningMetrics:
    """Counts updated crystal by crystal in evaluation order; JSON-serialisable state."""

    n_hits: int = N_HITS
    diversity_budget: int = DIVERSITY_BUDGET
    samples: int = 0
    evaluations: int = 0
    hit_formulas: set[str] = field(default_factory=set)
    valid_formulas: set[str] = field(default_factory=set)
    burden: float | None = None
    diversity_ratio_at_budget: float | None = None

    def add(self, valid: bool, formula: str, hit: bool) -> None:
        self.samples += 1
        if not valid:
            return
        self.evaluations += 1
        self.valid_formulas.add(formula)
        if hit and formula not in self.hit_formulas:
            self.hit_formulas.add(formula)
            if len(self.hit_formulas) == self.n_hits and self.burden is None:
                self.burden = self.evaluations / self.n_hits
        if self.evaluations == self.diversity_budget and self.diversity_ratio_at_budget is None:
            self.diversity_ratio_at_budget = len(self.valid_formulas) / self.evaluations

    def add_many(self, rows: Iterable[tuple[bool, str, bool]]) -> None:
        for valid, formula, hit in rows:
            self.add(valid, formula, hit)

    @property
    def hits(self) -> int:
        return len(self.hit_formulas)

    @property
    def evals_per_hit(self) -> float:
        return self.evaluations / self.hits if self.hits else math.inf

    @property
    def diversity_ratio(self) -> float:
        """At the diversity budget once reached, else running."""
        if self.diversity_ratio_at_budget is not None:
            return self.diversity_ratio_at_budget
        return len(self.valid_formulas) / self.evaluations if self.evaluations else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "evaluations": self.evaluations,
            "hits": self.hits,
            "burden": self.burden,
            "evals_per_hit": None if self.hits == 0 else self.evals_per_hit,
            "diversity_ratio": self.diversity_ratio,
            "diversity_ratio_at": self.diversity_budget if self.diversity_ratio_at_budget is not None else None,
            "validity_rate": self.evaluations / self.samples if self.samples else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_hits": self.n_hits,
            "diversity_budget": self.diversity_budget,
            "samples": self.samples,
            "evaluations": self.evaluations,
            "hit_formulas": sorted(self.hit_formulas),
            "valid_formulas": sorted(self.valid_formulas),
            "burden": self.burden,
            "diversity_ratio_at_budget": self.diversity_ratio_at_budget,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> RunningMetrics:
        state = dict(state)
        state["hit_formulas"] = set(state["hit_formulas"])
        state["valid_formulas"] = set(state["valid_formulas"])
        return cls(**state)


def metrics_from_memory(df: pd.DataFrame, n_hits: int = N_HITS, diversity_budget: int = DIVERSITY_BUDGET):
    """Recompute the running metrics from memory rows (ordered by ``id``)."""
    m = RunningMetrics(n_hits=n_hits, diversity_budget=diversity_budget)
    for valid, formula, hit in zip(df["valid"], df["formula"], df["hit"], strict=True):
        m.add(bool(valid), str(formula), bool(hit))
    return m
