"""An exclusive lock on a run folder: ``RUN/.lock`` held with ``flock`` and holding the holder's pid.

A second process that asks for the lock fails at once with :class:`RunLockedError` naming the
holder's pid. The kernel drops the lock when the holder exits, even on ``kill -9``, so a stale
``.lock`` file never blocks a later run; a clean release also deletes the file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """``with RunLock(folder):`` holds ``folder/.lock`` exclusively (the folder must exist)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is in use by another matinvent process (pid {holder}); "
                    "wait for it to finish or choose another --out"
                ) from None
            if self._still_linked(fd):
                break
            os.close(fd)  # the previous holder deleted the file while we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _still_linked(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: a waiting opener re-checks the link
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
