"""A persistent cache of oracle results: (structure hash, oracle key) → value, reason (and optional JSON data).

Each result is committed the moment it is stored (sqlite in WAL mode), so a process killed in the
middle of a batch loses none of the results it already had, and a rerun with the same cache calls the
oracles only for the rest. Keys:

- the structure: :func:`matinvent.crystal.structure_hash.structure_key` (lattice, fractional coordinates and
  species, rounded to 1e-6); a relaxed structure is another structure;
- the oracle: :func:`oracle_key` of its :class:`~matinvent.scoring.executor.OracleSpec`: name, factory and
  keyword arguments (a command oracle's command, an MLIP's model and settings).

What to store is the caller's choice; the :class:`~matinvent.scoring.scorer.Scorer` never stores failures marked
:class:`~matinvent.scoring.executor.TransientReason` (timeouts, lost workers), so those are retried. The file is
opened on first use and created on the first write (a run that fails before any oracle call leaves none).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from matinvent.scoring.executor import OracleSpec

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    structure TEXT NOT NULL, oracle TEXT NOT NULL, value REAL, reason TEXT NOT NULL, data TEXT,
    PRIMARY KEY (structure, oracle)
);
"""


class OracleCacheError(ValueError):
    """A cache file that is not a matinvent oracle cache (or not of this version)."""


class CachedResult(NamedTuple):
    """A stored result: ``value`` (NaN where the oracle failed), ``reason`` ("" where it worked), ``data`` (JSON)."""

    value: float
    reason: str
    data: Any


def _type_name(obj: Any) -> str:
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>"


def oracle_key(spec: OracleSpec) -> str:
    """A stable text key of what an oracle computes: its name, factory (``module:qualname``) and kwargs (JSON).

    Objects among the kwargs (e.g. an ASE calculator) count by their type, not their address.
    """
    factory = "registry" if spec.factory is None else f"{spec.factory.__module__}:{spec.factory.__qualname__}"
    return f"{spec.name}|{factory}|{json.dumps(spec.kwargs, sort_keys=True, default=_type_name)}"


class OracleCache:
    """The results table of the sqlite file ``path`` (one commit per :meth:`put`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is None and (create or self.path.exists()):
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process, which is the point
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.commit()
                (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                columns = [row[1] for row in conn.execute("PRAGMA table_info(results)")]
            except sqlite3.DatabaseError as exc:
                raise OracleCacheError(f"{self.path}: not a matinvent oracle cache ({exc})") from exc
            if version != str(SCHEMA_VERSION) or columns != ["structure", "oracle", "value", "reason", "data"]:
                conn.close()
                raise OracleCacheError(
                    f"{self.path}: oracle cache of schema version {version} with columns {columns}; this matinvent "
                    f"writes version {SCHEMA_VERSION}: move the file aside"
                )
            self._conn = conn
        return self._conn

    def get_many(self, structures: Sequence[str | None], oracle: str) -> dict[int, CachedResult]:
        """The stored results of ``oracle`` for the structure keys (``None`` keys skipped), by position."""
        conn = self._connect(create=False)
        wanted = {k for k in structures if k is not None}
        if conn is None or not wanted:
            return {}
        found: dict[str, CachedResult] = {}
        keys = sorted(wanted)
        for start in range(0, len(keys), 500):  # below sqlite's bound-parameter limit
            chunk = keys[start : start + 500]
            rows = conn.execute(
                f"SELECT structure, value, reason, data FROM results WHERE oracle = ? "
                f"AND structure IN ({','.join('?' * len(chunk))})",
                [oracle, *chunk],
            )
            for key, value, reason, data in rows:
                found[key] = CachedResult(math.nan if value is None else float(value), reason, _loads(data))
        return {i: found[k] for i, k in enumerate(structures) if k in found}

    def get(self, structure: str, oracle: str) -> CachedResult | None:
        return self.get_many([structure], oracle).get(0)

    def put(self, structure: str, oracle: str, value: float, reason: str = "", data: Any = None) -> None:
        """Store (or replace) one result and commit it."""
        conn = self._connect(create=True)
        number = float(value) if value is not None and math.isfinite(value) else None
        text = None if data is None else json.dumps(data)
        conn.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)", (structure, oracle, number, reason, text))
        conn.commit()

    def __len__(self) -> int:
        conn = self._connect(create=False)
        return 0 if conn is None else conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> OracleCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
