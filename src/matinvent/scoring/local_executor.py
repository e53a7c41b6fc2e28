"""Bounded oracle calls: each structure is evaluated in a worker process under a wall-clock limit.

A hang in C code (a neighbour search on an absurd cell, a stuck library call) cannot be stopped
by ``SIGALRM`` inside the process; a worker can always be killed. :class:`LocalExecutor` keeps
``workers`` processes (``forkserver`` on Linux, else ``spawn``; never ``fork``, which deadlocks
with torch threads), sends them one structure at a time and, per structure:

- returns the oracle's value (``oracle.evaluate([structure])``, as in-process);
- on an exception in the oracle: NaN and the exception as reason, the worker lives on;
- past ``timeout_s``: kills the worker (``SIGKILL``), NaN and a "timed out" reason, and starts a
  fresh worker for the next structure;
- when the worker dies (``os._exit``, segfault, out of memory): NaN and its exit code as reason.

Each worker builds an oracle once, on first use (:class:`~matinvent.scoring.executor.OracleSpec`), and
keeps it. Building has its own, generous limit (``build_timeout_s``); an oracle that cannot be built
raises :class:`~matinvent.oracles.OracleError`.

With ``timeout_s=None`` nothing is bounded: the workers only run the calls in parallel.

As with any ``spawn``/``forkserver`` multiprocessing, a script that uses it needs an
``if __name__ == "__main__":`` guard (workers import the main module).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import signal
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from matinvent.scoring.executor import (
    OnResult,
    OracleSpec,
    StructureExecutor,
    TransientReason,
    apply_one,
    one_torch_thread,
)

PRELOAD = ["matinvent.scoring.local_executor", "pymatgen.core"]  # imported once by the forkserver (no torch)
BUILD_TIMEOUT_S = 600.0  # seconds to import and load an oracle (CGCNN weights, an MLIP) in a fresh worker


def _worker_main(conn: Connection) -> None:
    """Serve ``("build", key, structure)`` and ``("eval"|"apply", key, item)`` until ``None`` or a closed pipe.

    ``key`` is the pickled :class:`OracleSpec`. A build message carries a sample structure only so that
    unpickling it (importing pymatgen) happens under the build limit, not the first structure's.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
    one_torch_thread()
    oracles: dict[bytes, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, key, payload = msg
        try:
            if kind == "build":
                if key not in oracles:
                    oracles[key] = pickle.loads(key).build()
                conn.send(("ok", None))
            else:
                conn.send(("ok", apply_one(oracles[key], kind, payload)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this structure's reason
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


# --- the parent side --------------------------------------------------------------------------------


class _Worker:
    """One worker process, its pipe and the oracles it has built."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="matinvent-oracle")
        self.proc.start()
        child.close()
        self.built: set[bytes] = set()
        self.task: tuple[str, int, float] | None = None  # (kind, structure index, deadline)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, kind: str, key: bytes, payload: Any, index: int, limit: float | None) -> bool:
        """Start a task (``limit`` seconds, ``None``: unbounded); ``False`` when the worker is gone already."""
        self.task = (kind, index, math.inf if limit is None else time.monotonic() + limit)
        try:
            self.conn.send((kind, key, payload))
        except OSError:
            return False
        return True

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=2)
        self.kill()


class LocalExecutor(StructureExecutor):
    """Evaluates oracles structure by structure in ``workers`` local processes, each call at most ``timeout_s``
    (``None``: unbounded, the workers only run calls in parallel).

    Workers start on first use and are reused across calls (and across oracles); ``close()`` (or
    leaving a ``with`` block) stops them. Not thread-safe: one ``evaluate`` at a time.
    """

    def __init__(
        self,
        timeout_s: float | None,
        workers: int = 1,
        build_timeout_s: float = BUILD_TIMEOUT_S,
        start_method: str | None = None,
    ) -> None:
        if timeout_s is not None and not (
            isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0
        ):
            raise ValueError(f"timeout_s must be a positive finite number of seconds or None, got {timeout_s!r}")
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not build_timeout_s > 0:
            raise ValueError(f"build_timeout_s must be > 0, got {build_timeout_s!r}")
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        if start_method == "fork":
            raise ValueError("start_method 'fork' is not safe with torch threads; use 'forkserver' or 'spawn'")
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.workers, self.build_timeout_s = workers, float(build_timeout_s)
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":  # a restarted worker is a fork of a server that imported these once
            self._ctx.set_forkserver_preload(PRELOAD)
        self._pool: list[_Worker] = []

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [w.pid for w in self._pool]

    def _run(
        self, kind: str, spec: OracleSpec, structures: Sequence[Any], on_result: OnResult | None
    ) -> tuple[list[Any], list[str]]:
        key = pickle.dumps(spec)
        values: list[Any] = [None] * len(structures)
        reasons = ["" if s is not None else "no structure" for s in structures]
        todo = deque(i for i, s in enumerate(structures) if s is not None)
        for w in [w for w in self._pool if not w.proc.is_alive()]:  # died between calls: no structure's fault
            self._drop(w)
        try:
            while todo or any(w.task for w in self._pool):
                while len(self._pool) < self.workers and len(todo) > sum(w.task is None for w in self._pool):
                    self._pool.append(_Worker(self._ctx))
                for w in [w for w in self._pool if w.task is None and todo]:
                    if key not in w.built:  # a worker that cannot even start fails its build in _collect
                        w.send("build", key, structures[todo[0]], -1, self.build_timeout_s)
                    elif w.send(kind, key, structures[todo[0]], todo[0], self.timeout_s):
                        todo.popleft()
                    else:  # it died after its last task: no structure's fault, a fresh worker takes over
                        self._drop(w)
                self._collect(spec, key, values, reasons, on_result)
        except BaseException:
            self.close()  # a worker may hold a half-done task: start clean next time
            raise
        return values, reasons

    def _collect(
        self, spec: OracleSpec, key: bytes, values: list[Any], reasons: list[str], on_result: OnResult | None
    ) -> None:
        """Wait until a busy worker answers, dies or passes its deadline; record what happened."""
        from matinvent.oracles import OracleError

        busy = [w for w in self._pool if w.task is not None]
        if not busy:  # every send failed (workers dropped): the caller's loop starts fresh ones
            return
        deadline = min(w.task[2] for w in busy)
        timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
        wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=timeout)
        now = time.monotonic()
        for w in busy:
            kind, i, due = w.task
            answer, why = None, ""
            if w.conn.poll():
                try:
                    answer = w.conn.recv()
                except (EOFError, OSError):
                    why = self._died(w)
            elif not w.proc.is_alive():
                why = self._died(w)
            elif now >= due:
                limit = self.build_timeout_s if kind == "build" else self.timeout_s
                why = TransientReason(f"timed out after {limit:g} s (worker killed)")
            else:
                continue
            w.task = None
            if answer is None:  # dead, or hung and now killed: a fresh worker takes the next structure
                self._drop(w)
            elif answer[0] == "ok":
                if kind == "build":
                    w.built.add(key)
                else:
                    values[i] = answer[1]
                    if on_result is not None:
                        on_result(i, values[i], "")
                continue
            else:
                why = answer[1]
            if kind == "build":
                hint = "" if answer else " (its stderr says why; a script needs an `if __name__ == '__main__':` guard)"
                raise OracleError(f"oracle '{spec.name}' could not be built in a worker: {why}{hint}")
            reasons[i] = type(why)(f"oracle '{spec.name}': {why}")  # a TransientReason stays one
            if on_result is not None:
                on_result(i, math.nan if kind == "eval" else None, reasons[i])

    def _drop(self, w: _Worker) -> None:
        w.kill()
        self._pool.remove(w)

    @staticmethod
    def _died(w: _Worker) -> TransientReason:
        w.proc.join(timeout=5)
        code = w.proc.exitcode
        if code is not None and code < 0:
            try:
                return TransientReason(f"worker died with signal {signal.Signals(-code).name}")
            except ValueError:
                return TransientReason(f"worker died with signal {-code}")
        return TransientReason(f"worker died with exit code {code}")

    def close(self) -> None:
        """Stop every worker (killing any that is busy)."""
        pool, self._pool = self._pool, []
        for w in pool:
            if w.task is None:
                w.stop()
            else:
                w.kill()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # workers are daemons too: they never outlive the parent
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
