"""A slow toy oracle that logs its calls, for the Dask executor and cache tests; also a scoring script.

Importable by Dask and executor worker processes (tests/ is on ``sys.path``, which spawned workers
inherit). ``python slow_oracles.py CACHE CALLS DELAY N [SCHEDULER]`` scores ``N`` toy structures through a
``DaskExecutor`` (on SCHEDULER, else a 2-worker LocalCluster) with the cache ``CACHE``, printing the
values (the kill -9 test runs it in a subprocess).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure

from matinvent.oracles.base import Oracle


def log_call(calls_file: str | None, structure: Any) -> None:
    """Append one line naming ``structure`` (its cell edge, Å) to ``calls_file`` (O_APPEND: whole lines)."""
    if calls_file:
        fd = os.open(calls_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{structure.lattice.a:.4f}\n".encode())
        finally:
            os.close(fd)


def read_calls(calls_file: Any) -> list[str]:
    """The structures (cell edges) logged by :func:`log_call`, one per call."""
    try:
        with open(calls_file) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


class SlowOracle(Oracle):
    """Density (g/cm³) after ``delay`` seconds per structure; every call is logged to ``calls_file``.

    On a structure that contains ``trigger`` it does ``mode``: ``raise`` (a ValueError), ``crash``
    (``os._exit(1)``: the worker dies), ``hang`` (sleeps 1000 s) or ``slow`` (takes 1 s, then answers).
    """

    name = "slow"
    unit = "g/cm^3"
    batch_size = 1

    def __init__(
        self, delay: float = 0.0, calls_file: str | None = None, trigger: str = "Kr", mode: str = "raise"
    ) -> None:
        self.delay, self.calls_file, self.trigger, self.mode = delay, calls_file, trigger, mode

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        out = []
        for s in structures:
            log_call(self.calls_file, s)
            triggered = self.trigger in {el.symbol for el in s.composition.elements}
            if triggered:
                if self.mode == "crash":
                    os._exit(1)
                if self.mode == "hang":
                    time.sleep(1000)
                if self.mode != "slow":
                    raise ValueError("slow oracle refuses this structure")
            time.sleep(1.0 if triggered and self.mode == "slow" else self.delay)
            out.append(s.density)
        return np.array(out)


FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def rock_salts(n: int, cation: str = "Na") -> list[Structure]:
    """``n`` conventional rock-salt cells ``cation``₄Cl₄ with cell edges 5.40, 5.45, ... Å (distinct, valid).

    Built from the site list, not ``Structure.from_spacegroup`` (about 0.5 s a cell).
    """
    frac = FCC + [[x + 0.5 if x == 0 else x - 0.5 for x in p] for p in FCC]  # Cl: the fcc sites shifted by a/2
    return [Structure(Lattice.cubic(5.4 + 0.05 * i), [cation] * 4 + ["Cl"] * 4, frac) for i in range(n)]


if __name__ == "__main__":  # python slow_oracles.py CACHE CALLS DELAY N [SCHEDULER]
    from matinvent.scoring.dask_executor import DaskExecutor
    from matinvent.scoring.executor import OracleSpec
    from matinvent.scoring.rewards import Target
    from matinvent.scoring.scorer import Scorer
    from matinvent.scoring.tasks import Task

    cache, calls, delay, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    scheduler = sys.argv[5] if len(sys.argv) > 5 else None  # default: a LocalCluster of its own
    task = Task("slow", (Target(prop="slow", kind="above", threshold=1.0),))
    import slow_oracles  # by its module name, as the tests name it (the oracle cache keys on module:class)

    spec = OracleSpec("slow", {"delay": delay, "calls_file": calls}, factory=slow_oracles.SlowOracle)
    scorer = Scorer(task, oracles={"slow": spec}, validity="none", executor=DaskExecutor(scheduler), cache=cache)
    try:
        scores = scorer(rock_salts(n))
    finally:
        scorer.close()
    print(" ".join(f"{v:.6f}" for v in scores.values["slow"]))
