"""Run memory: every sampled crystal of an optimisation run in ``RUN_DIR/memory.sqlite``.

Table ``crystals``: one row per sampled crystal (valid or not), committed the moment its batch
is scored, so that a run killed at any point loses nothing already paid for. Columns:
``id, run_id, method, iteration, idx`` (position in the iteration's batch), ``formula``
(reduced), ``cif``, ``valid`` (0/1: passed the structure/composition checks and was sent to
the oracles), ``failed`` (an oracle returned NaN), one REAL column per task property (named as
its oracle), ``reward``, ``filtered_reward`` (after the diversity filter), ``hit`` (0/1),
``created`` (Unix time). With relaxation in the loop (``relax: mlip``) also ``relaxed_cif`` (the relaxed
structure, also where the gate then rejected it), ``relax_e_hull`` (eV/atom above the shipped hull, on that
relaxation), ``relax_energy_drop`` (eV/atom, start → relaxed) and ``relax_rmsd`` (Å, sites start → relaxed); NULL
otherwise. A memory written before these columns existed gets them (NULL) when opened.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

FIXED = ("run_id", "method", "iteration", "idx", "formula", "cif", "valid", "failed")
SCORES = ("reward", "filtered_reward", "hit")
RELAXED = (("relaxed_cif", "TEXT"), ("relax_e_hull", "REAL"), ("relax_energy_drop", "REAL"), ("relax_rmsd", "REAL"))
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class CrystalRecord:
    """One sampled crystal as stored; ``properties`` holds NaN/None where not evaluated."""

    run_id: str
    method: str
    iteration: int
    idx: int
    formula: str
    cif: str
    valid: bool
    failed: bool
    properties: dict[str, float | None]
    reward: float
    filtered_reward: float
    hit: bool
    relaxed_cif: str | None = None
    e_hull: float | None = None
    energy_drop: float | None = None
    rmsd: float | None = None


class Memory:
    """SQLite store of a run's crystals (``RUN_DIR/memory.sqlite``)."""

    def __init__(self, path: str | Path, properties: Sequence[str]) -> None:
        for p in properties:
            if not _NAME.match(p) or p in FIXED + SCORES + ("id", "created") + tuple(c for c, _ in RELAXED):
                raise ValueError(f"property name {p!r} cannot be a memory column")
        self.path = Path(path)
        self.properties = list(properties)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder, not a run memory (sqlite file)")
        try:
            self.conn = sqlite3.connect(str(self.path))
        except sqlite3.Error as exc:
            raise ValueError(f"{self.path}: cannot open the run memory: {exc}") from exc
        prop_cols = "".join(f', "{p}" REAL' for p in self.properties)
        try:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS crystals (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, method TEXT, "
                "iteration INTEGER, idx INTEGER, formula TEXT, cif TEXT, valid INTEGER, failed INTEGER"
                f"{prop_cols}, reward REAL, filtered_reward REAL, hit INTEGER, created REAL, "
                "UNIQUE(run_id, iteration, idx))"
            )
            have = {row[1] for row in self.conn.execute("PRAGMA table_info(crystals)")}
            for col, kind in RELAXED:  # a memory of an older matinvent: the relaxation columns, NULL
                if col not in have:
                    self.conn.execute(f"ALTER TABLE crystals ADD COLUMN {col} {kind}")
            self.conn.commit()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise ValueError(f"{self.path}: not a matinvent memory database ({exc})") from exc
        missing = [p for p in self.properties if p not in have]
        if missing:
            self.conn.close()
            raise ValueError(f"{self.path} was written for other properties (missing columns {missing})")

    def add(self, records: Iterable[CrystalRecord]) -> None:
        """Insert a batch in one transaction (committed before returning)."""
        cols = [*FIXED, *(f'"{p}"' for p in self.properties), *SCORES, "created", *(c for c, _ in RELAXED)]
        sql = f"INSERT INTO crystals ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        now = time.time()
        rows = []
        for r in records:
            props = [_real(r.properties.get(p)) for p in self.properties]
            rows.append(
                (r.run_id, r.method, r.iteration, r.idx, r.formula, r.cif, int(r.valid), int(r.failed), *props)
                + (float(r.reward), float(r.filtered_reward), int(r.hit), now)
                + (r.relaxed_cif or None, _real(r.e_hull), _real(r.energy_drop), _real(r.rmsd))
            )
        with self.conn:
            self.conn.executemany(sql, rows)

    def iteration_rows(self, run_id: str, iteration: int) -> dict[int, dict[str, Any]]:
        """Rows already stored for one iteration, by ``idx`` (used when resuming a killed run)."""
        cur = self.conn.execute(
            "SELECT * FROM crystals WHERE run_id = ? AND iteration = ? ORDER BY idx", (run_id, iteration)
        )
        names = [d[0] for d in cur.description]
        return {row[names.index("idx")]: dict(zip(names, row, strict=True)) for row in cur}

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM crystals").fetchone()[0])

    def counts(self, run_id: str, before: int) -> tuple[int, int, int]:
        """(rows, evaluated rows) of iterations < ``before`` and the last iteration stored (-1: none) of a run."""
        try:
            rows, evaluated, last = self.conn.execute(
                "SELECT SUM(iteration < ?), SUM(valid * (iteration < ?)), MAX(iteration) "
                "FROM crystals WHERE run_id = ?",
                (before, before, run_id),
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: the run memory is damaged: {exc}") from exc
        return int(rows or 0), int(evaluated or 0), -1 if last is None else int(last)

    def delete_after(self, run_id: str, iteration: int) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM crystals WHERE run_id = ? AND iteration > ?", (run_id, iteration))

    def frame(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM crystals ORDER BY id", self.conn)

    def close(self) -> None:
        self.conn.close()


def _real(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if v != v else v  # NaN is stored as NULL


def read_memory(run_dir: str | Path) -> pd.DataFrame:
    """All rows of ``RUN_DIR/memory.sqlite`` as a DataFrame (NULL properties become NaN)."""
    path = Path(run_dir) / "memory.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no memory.sqlite (not a matinvent optimize run?)")
    conn = sqlite3.connect(str(path))
    try:
        return pd.read_sql_query("SELECT * FROM crystals ORDER BY id", conn)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise ValueError(f"{path}: not a matinvent memory database ({exc})") from exc
    finally:
        conn.close()
