"""Readers for CDVAE/DiffCSP crystal CSV files (``{train,val,test}.csv`` and ``.csv.gz``).

Columns used: ``cif`` (required) and ``material_id`` (optional; a row number otherwise). Files
with or without the leading unnamed index column are accepted; invalid UTF-8 bytes are replaced.
Every row is read on its own: a row whose CIF does not parse (or fails the cheap checks of
``matinvent.crystal.checks``) is skipped and reported in one warning, never raised, or, with
``keep_failed=True``, kept as ``None`` with a reason naming the file, row and problem.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from matinvent.crystal.checks import MAX_ATOMS
from matinvent.crystal.record import Crystal, CrystalError, TooManyAtomsError


@dataclass
class CrystalTable:
    """Parsed crystals with their ids and the other CSV columns (aligned row for row).

    ``reasons[i]`` is ``""`` for a parsed crystal; with ``keep_failed`` a failed row has crystal
    ``None`` and a reason such as ``"train.csv row 3 (mp-1): could not parse CIF: …"``.
    """

    crystals: list[Crystal | None]
    ids: list[str]
    properties: pd.DataFrame
    n_skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.crystals)


def read_cdvae_csv(
    path: str | Path, limit: int | None = None, max_atoms: int | None = None, keep_failed: bool = False
) -> CrystalTable:
    """Read a CDVAE/DiffCSP CSV. ``limit`` keeps the first rows; ``max_atoms`` (default ``MAX_ATOMS``)
    drops larger cells before their CIF is parsed; ``keep_failed`` keeps failed rows as ``None`` + reason."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        df = pd.read_csv(path, nrows=limit, encoding_errors="replace")
    except Exception as exc:
        raise CrystalError(f"{path}: not a readable CSV: {exc}") from exc
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed:") and str(c) != ""]]
    if "cif" not in df.columns:
        raise CrystalError(f"{path}: no 'cif' column (columns: {list(df.columns)})")
    cap = MAX_ATOMS if max_atoms is None else max_atoms
    crystals, ids, keep, reasons = [], [], [], []
    skipped = too_big = 0
    has_id = "material_id" in df.columns
    for i, row in enumerate(df.itertuples(index=False)):
        row_id = str(row.material_id) if has_id else str(i)
        crystal, reason = None, ""
        try:
            if not isinstance(row.cif, str) or not row.cif.strip():
                raise CrystalError("empty CIF")
            crystal = Crystal.from_cif(row.cif, max_atoms=cap)
        except TooManyAtomsError as exc:
            too_big += 1
            reason = str(exc)
        except CrystalError as exc:
            skipped += 1
            reason = str(exc)
        if crystal is None and not keep_failed:
            continue
        crystals.append(crystal)
        ids.append(row_id)
        keep.append(i)
        reasons.append(f"{path.name} row {i} ({row_id}): {reason}" if reason else "")
    if skipped and not keep_failed:  # with keep_failed the reasons travel with the rows
        warnings.warn(f"{path}: skipped {skipped} of {len(df)} rows whose CIF could not be parsed", stacklevel=2)
    if too_big and not keep_failed:
        warnings.warn(f"{path}: dropped {too_big} crystals with more than {cap} atoms", stacklevel=2)
    props = df.drop(columns=["cif"]).iloc[keep].reset_index(drop=True)
    return CrystalTable(crystals=crystals, ids=ids, properties=props, n_skipped=skipped, reasons=reasons)


def save_arrays(crystals: list[Crystal], path: str | Path) -> None:
    """Cache parsed crystals as a compact ``.npz`` (no pickles)."""
    n = np.array([c.num_atoms for c in crystals], dtype=np.int64)
    np.savez_compressed(
        path,
        num_atoms=n,
        Z=np.concatenate([c.Z for c in crystals]),
        F=np.concatenate([c.F for c in crystals]),
        L=np.stack([c.L for c in crystals]),
    )


def load_arrays(path: str | Path) -> list[Crystal]:
    """Inverse of ``save_arrays``."""
    with np.load(path, allow_pickle=False) as d:
        n, Z, F, L = d["num_atoms"], d["Z"], d["F"], d["L"]
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    return [Crystal(Z=Z[s : s + k], F=F[s : s + k], L=L[i]) for i, (s, k) in enumerate(zip(starts, n, strict=True))]
