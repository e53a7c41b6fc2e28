"""Building the executor of the ``executor`` / ``scheduler`` / ``workers`` settings (config keys and CLI flags)."""

from __future__ import annotations

from matinvent.scoring.dask_executor import DEFAULT_WORKERS, DaskExecutor
from matinvent.scoring.executor import EXECUTORS, OracleExecutor
from matinvent.scoring.local_executor import LocalExecutor


def make_executor(
    kind: str = "local", scheduler: str | None = None, workers: int | None = None, timeout_s: float | None = None
) -> OracleExecutor | None:
    """The executor of the ``executor``/``scheduler``/``workers`` settings (``None``: the Scorer's default).

    ``local`` without ``workers``: ``None`` (in-process, or one bounded worker when ``timeout_s`` is set, as
    before); ``local`` with ``workers``: a :class:`LocalExecutor` of that many processes (each call bounded
    by ``timeout_s`` when set); ``dask``: a
    :class:`~matinvent.scoring.dask_executor.DaskExecutor` on ``scheduler`` (``tcp://host:port``) or on a
    ``LocalCluster`` of ``workers`` processes (default 2).
    """
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if kind == "local":
        if scheduler is not None:
            raise ValueError(f"a scheduler address ({scheduler}) needs executor 'dask'")
        return None if workers is None else LocalExecutor(timeout_s, workers=workers)
    if scheduler is not None and workers is not None:
        raise ValueError(f"workers sizes a local Dask cluster; the cluster at {scheduler} has its own workers")
    return DaskExecutor(scheduler, workers=workers or DEFAULT_WORKERS, timeout_s=timeout_s)
