"""Toy oracles for the executor tests: they misbehave on structures that contain a trigger element.

Importable by the executor's worker processes (tests/ is on ``sys.path``, which the workers inherit).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from matinvent.oracles.base import Oracle


class MisbehavingOracle(Oracle):
    """``len(structure)`` per structure; on one containing ``trigger`` it does ``mode``:

    ``sleep`` (time.sleep(1000)), ``busy`` (a busy loop that ignores SIGALRM and SIGTERM), ``crash``
    (``os._exit(1)``) or ``raise`` (a ValueError). Before misbehaving it writes its pid to ``pid_file``.
    """

    name = "toy"
    unit = "atoms"

    def __init__(self, mode: str = "sleep", trigger: str = "Kr", pid_file: str | None = None) -> None:
        self.mode, self.trigger, self.pid_file = mode, trigger, pid_file

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        out = []
        for s in structures:
            if self.trigger in {el.symbol for el in s.composition.elements}:
                self._misbehave()
            out.append(float(len(s)))
        return np.array(out)

    def _misbehave(self) -> None:
        if self.pid_file:
            Path(self.pid_file).write_text(str(os.getpid()))
        if self.mode == "sleep":
            time.sleep(1000)
        elif self.mode == "busy":
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:
                pass
        elif self.mode == "crash":
            os._exit(1)
        raise ValueError("toy oracle refuses this structure")


def broken_factory() -> Oracle:
    """A factory whose oracle cannot be built."""
    raise RuntimeError("no weights here")


class TorchThreads(Oracle):
    """The torch intra-op thread count of the process it runs in, per structure."""

    name = "threads"
    unit = ""

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        import torch

        return np.full(len(structures), float(torch.get_num_threads()))
