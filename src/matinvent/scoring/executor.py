"""The oracle-executor protocol: how oracles travel to workers, and what an executor returns.

Oracles travel as an :class:`OracleSpec` (a registry name, or a picklable factory, plus keyword
arguments); each worker builds an oracle once, on first use, and keeps it, so model weights are
loaded once per worker, not per structure.

Besides ``evaluate`` (one float per structure, from ``oracle.evaluate([structure])``), ``map(spec, items)``
returns whatever ``built.apply(item)`` returns (e.g. a relaxed structure). Both take
``on_result(index, result, reason)``, called in the calling thread the moment each item's result arrives
(so a caller can store it at once); a :class:`TransientReason` marks failures that say nothing about the
item (a timeout, a lost worker), which a cache must not keep as final. Two executors implement the
:class:`OracleExecutor` protocol: :class:`~matinvent.scoring.local_executor.LocalExecutor` (local processes,
each call bounded) and :class:`~matinvent.scoring.dask_executor.DaskExecutor` (a Dask cluster);
:func:`~matinvent.scoring.executors.make_executor` builds one from the ``executor``/``scheduler``/``workers``
settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class OracleSpec:
    """How a worker builds an oracle: ``factory(**kwargs)``, or ``get_oracle(name, **kwargs)`` without a factory.

    The factory must be picklable by reference (a class or a module-level function).
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    factory: Callable[..., Any] | None = None

    def build(self) -> Any:
        if self.factory is not None:
            return self.factory(**self.kwargs)
        from matinvent.oracles import get_oracle

        return get_oracle(self.name, **self.kwargs)


class TransientReason(str):
    """A failure reason caused by the run, not the structure (a timeout, a lost worker): worth a retry later."""


OnResult = Callable[[int, Any, str], None]  # (item index, result or value, reason "" where it worked)


class Evaluation(NamedTuple):
    """Per-structure values (float64, NaN where it failed) and reasons (``""`` where it succeeded)."""

    values: np.ndarray
    reasons: list[str]


class OracleExecutor(Protocol):
    """What the :class:`~matinvent.scoring.scorer.Scorer` needs of an executor."""

    def evaluate(
        self, spec: OracleSpec, structures: Sequence[Any], on_result: OnResult | None = None
    ) -> Evaluation: ...

    def map(
        self, spec: OracleSpec, items: Sequence[Any], on_result: OnResult | None = None
    ) -> tuple[list[Any], list[str]]: ...

    def close(self) -> None: ...


# --- the worker side --------------------------------------------------------------------------------


def apply_one(oracle: Any, kind: str, item: Any) -> Any:
    """One item's result: "eval" → the float of ``oracle.evaluate([item])``, "apply" → ``oracle.apply(item)``."""
    if kind == "apply":
        return oracle.apply(item)
    values = np.asarray(oracle.evaluate([item]), dtype=np.float64).reshape(-1)
    if len(values) != 1:
        raise ValueError(f"returned {len(values)} values for 1 structure")
    return float(values[0])


class StructureExecutor:
    """``evaluate`` and ``map`` over one ``_run(kind, spec, items, on_result)``: the executors' shared face."""

    def _run(
        self, kind: str, spec: OracleSpec, items: Sequence[Any], on_result: OnResult | None
    ) -> tuple[list[Any], list[str]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, spec: OracleSpec, structures: Sequence[Any], on_result: OnResult | None = None) -> Evaluation:
        """One value per structure (``None`` → NaN, "no structure"); ``on_result`` as each one arrives."""
        results, reasons = self._run("eval", spec, structures, on_result)
        return Evaluation(np.array([np.nan if r is None else r for r in results], dtype=np.float64), reasons)

    def map(
        self, spec: OracleSpec, items: Sequence[Any], on_result: OnResult | None = None
    ) -> tuple[list[Any], list[str]]:
        """``built.apply(item)`` per item (``None`` where it failed or the item is ``None``), and the reasons."""
        return self._run("apply", spec, items, on_result)


_ONE_THREAD = False


def one_torch_thread() -> None:
    """Give this worker process one torch intra-op thread (once): several oracle workers on one machine would
    otherwise each start a thread per core and slow all of them (benchmarks/results/rl_speed.md)."""
    global _ONE_THREAD
    if _ONE_THREAD:
        return
    _ONE_THREAD = True
    try:
        import torch
    except ImportError:  # an oracle-only environment without torch
        return
    torch.set_num_threads(1)
