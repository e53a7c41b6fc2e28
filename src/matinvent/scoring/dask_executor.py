"""Oracle calls on a Dask cluster: each structure is one task, results are taken as they complete.

:class:`DaskExecutor` implements the :class:`~matinvent.scoring.executor.OracleExecutor` protocol on a
``dask.distributed`` cluster: the scheduler at ``scheduler`` (``tcp://host:port``, e.g. a
``dask-jobqueue`` ``SLURMCluster``'s), or a ``LocalCluster`` of ``workers`` single-threaded worker
processes on this machine (bound to 127.0.0.1). Per structure:

- the oracle's value (``oracle.evaluate([structure])``; ``map`` returns ``oracle.apply(item)``);
- an exception in the oracle: NaN and the exception as reason; the worker lives on;
- the worker dies (segfault, out of memory, ``os._exit``, a node lost): NaN and a
  :class:`~matinvent.scoring.executor.TransientReason` (a resume tries it again);
- past ``timeout_s``: NaN and a "timed out" ``TransientReason``. Dask cannot stop a running call: it
  is abandoned, its thread runs on in the worker until it returns (a hang keeps its memory, a busy
  loop a core). Where hangs must be killed, use the local executor (``LocalExecutor`` kills its
  worker); a command oracle kills its own process group at its ``timeout``.

Each worker process builds an oracle once, on its first structure, and keeps it (keyed by its
:func:`~matinvent.scoring.oracle_cache.oracle_key`), so model weights load once per worker. The spec's factory and
the oracle's module must be importable on the workers (a cluster's Python environment is its own).

The executor keeps one task per worker thread in flight (a new one is submitted as each completes),
so a worker holds no queue and a lost worker costs only the structure it was running; workers that
join an adaptive cluster get work within a second. Its own ``LocalCluster`` runs with
``allowed-failures: 0`` (a task whose worker died is that structure's NaN at once, not retried on
the next worker); an external cluster keeps its own settings (by default, Dask retries a task on 3
more workers before giving up, which rides out a preempted node). Like any spawned
worker pool, a script that starts a ``LocalCluster`` needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

from matinvent.scoring.executor import (
    OnResult,
    OracleSpec,
    StructureExecutor,
    TransientReason,
    apply_one,
    one_torch_thread,
)
from matinvent.scoring.oracle_cache import oracle_key

DEFAULT_WORKERS = 2
CONNECT_TIMEOUT_S = 30.0  # seconds to reach an external scheduler
LOCAL_CLUSTER_CONFIG = {"distributed.scheduler.allowed-failures": 0}

# --- the worker side --------------------------------------------------------------------------------

_BUILT: dict[str, Any] = {}  # on each worker process: oracle key -> built oracle
_BUILD_LOCK = threading.Lock()


def _built(spec: OracleSpec) -> Any:
    key = oracle_key(spec)  # not pickle.dumps: a factory defined in a script arrives by value (cloudpickle)
    with _BUILD_LOCK:
        if key not in _BUILT:
            _BUILT[key] = spec.build()
        return _BUILT[key]


def run_on_worker(spec: OracleSpec, kind: str, item: Any, timeout_s: float | None) -> tuple[str, Any]:
    """One item on a worker: ``("ok", result)``, ``("error", why)``, ``("timeout", why)`` or ``("build", why)``."""
    one_torch_thread()
    try:
        oracle = _built(spec)
    except Exception as exc:  # noqa: BLE001 - the client raises OracleError with this text
        return "build", f"{type(exc).__name__}: {exc}"

    def call() -> tuple[str, Any]:
        try:
            return "ok", apply_one(oracle, kind, item)
        except Exception as exc:  # noqa: BLE001 - this structure's reason
            return "error", f"{type(exc).__name__}: {exc}"

    if timeout_s is None:
        return call()
    box: list[tuple[str, Any]] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True, name="matinvent-oracle-call")
    thread.start()
    thread.join(timeout_s)
    if box:
        return box[0]
    return "timeout", f"timed out after {timeout_s:g} s (call abandoned on its worker)"


# --- the client side --------------------------------------------------------------------------------


def local_cluster(workers: int = DEFAULT_WORKERS) -> Any:
    """A ``LocalCluster`` of ``workers`` single-threaded processes on 127.0.0.1, set up as described above."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


class DaskExecutor(StructureExecutor):
    """Evaluates oracles one task per structure on a Dask cluster (``scheduler``) or a local one (``workers``).

    The cluster is started (or connected to) on first use; ``close()`` (or leaving a ``with`` block) shuts
    down a cluster it started and disconnects from an external one.
    """

    def __init__(self, scheduler: str | None = None, workers: int = DEFAULT_WORKERS, timeout_s: float | None = None):
        if scheduler is not None and not (isinstance(scheduler, str) and "://" in scheduler):
            raise ValueError(f"scheduler must be an address like tcp://host:8786, got {scheduler!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if timeout_s is not None and not (
            isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0
        ):
            raise ValueError(f"timeout_s must be a positive finite number of seconds or None, got {timeout_s!r}")
        self.scheduler, self.workers = scheduler, workers
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self._cluster: Any = None
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (connecting, or starting the local cluster, on first use)."""
        if self._client is None:
            from distributed import Client

            if self.scheduler is None:
                self._cluster = local_cluster(self.workers)
                self._client = Client(self._cluster)
            else:
                try:
                    self._client = Client(self.scheduler, timeout=CONNECT_TIMEOUT_S)
                except OSError as exc:
                    raise RuntimeError(f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from exc
        return self._client

    def _run(
        self, kind: str, spec: OracleSpec, items: Sequence[Any], on_result: OnResult | None
    ) -> tuple[list[Any], list[str]]:
        """Keep one task per worker thread in flight (a lost worker then holds no queued structure)."""
        from distributed import as_completed

        from matinvent.oracles import OracleError

        results: list[Any] = [None] * len(items)
        reasons = ["" if s is not None else "no structure" for s in items]
        todo = deque(i for i, s in enumerate(items) if s is not None)
        if not todo:
            return results, reasons
        client, batch = self.client, uuid.uuid4().hex[:8]
        futures: dict[Any, int] = {}
        done = as_completed()
        slots = _Slots(client)

        def top_up() -> None:
            while todo and len(futures) < slots():
                i = todo.popleft()
                key = f"{spec.name}-{batch}-{i}"
                future = client.submit(run_on_worker, spec, kind, items[i], self.timeout_s, key=key, pure=False)
                futures[future] = i
                done.add(future)

        failed = math.nan if kind == "eval" else None
        try:
            top_up()
            for future in done:
                i = futures.pop(future)
                try:
                    status, payload = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker, CommClosedError, a lost future
                    if not _worker_lost(exc):
                        raise OracleError(f"oracle '{spec.name}' could not run on the Dask workers: {exc}") from exc
                    status, payload = "lost", f"worker lost ({type(exc).__name__})"
                finally:
                    future.release()
                if status == "build":
                    raise OracleError(f"oracle '{spec.name}' could not be built on a Dask worker: {payload}")
                if status == "ok":
                    results[i] = payload
                else:
                    why = TransientReason if status in ("timeout", "lost") else str
                    reasons[i] = why(f"oracle '{spec.name}': {payload}")
                if on_result is not None:
                    on_result(i, results[i] if status == "ok" else failed, reasons[i])
                top_up()
        finally:
            if futures:  # an error or Ctrl-C: nothing of this batch keeps running
                client.cancel(list(futures))
        return results, reasons

    def close(self) -> None:
        """Disconnect, and shut down the local cluster if this executor started it."""
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Slots:
    """The cluster's worker threads (at least 1), asked again at most every ``REFRESH_S`` (workers come and go)."""

    REFRESH_S = 1.0

    def __init__(self, client: Any) -> None:
        self.client, self.n, self.at = client, 1, -math.inf

    def __call__(self) -> int:
        if time.monotonic() - self.at > self.REFRESH_S:
            self.n, self.at = max(1, sum(self.client.nthreads().values())), time.monotonic()
        return self.n


def _worker_lost(exc: BaseException) -> bool:
    """Whether a task's exception says its worker went away (not that the task itself is broken)."""
    from distributed.scheduler import KilledWorker

    try:
        from distributed.comm.core import CommClosedError
    except ImportError:  # pragma: no cover - moved in some release
        CommClosedError = OSError  # noqa: N806
    import concurrent.futures

    return isinstance(exc, KilledWorker | CommClosedError | OSError | concurrent.futures.CancelledError)
