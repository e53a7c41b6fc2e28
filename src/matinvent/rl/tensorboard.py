"""Optional TensorBoard logging of an optimisation's per-iteration metrics (``optimize --tensorboard DIR``).

Each row that ``metrics.csv`` gets is also written as scalars ``matinvent/<column>`` at step =
cumulative oracle evaluations (the x axis of the report's curves); NaN/None cells are skipped.
Needs ``tensorboard`` (``pip install tensorboard``; ``torch.utils.tensorboard`` writes the events).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

from matinvent.config_io import ConfigError

PREFIX = "matinvent/"
STEP = "evaluations"


class TensorBoardLogger:
    """Writes metrics rows to a TensorBoard event folder ``log_dir`` (created at the first row)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                f"--tensorboard {log_dir}: TensorBoard is not installed (pip install tensorboard): {exc}"
            ) from exc
        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self.writer: Any = None

    def log(self, row: dict[str, Any]) -> None:
        """One metrics row (``iteration``, ``evaluations``, means, hits, …) as scalars at step ``evaluations``."""
        if self.writer is None:
            self.writer = self._writer_class(log_dir=str(self.log_dir))
        step = int(row[STEP])
        for key, value in row.items():
            if (
                key == STEP
                or isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
            ):
                continue
            self.writer.add_scalar(PREFIX + key, float(value), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
