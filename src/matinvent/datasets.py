"""Readers for CDVAE/DiffCSP crystal CSV files (``{train,val,test}.csv`` and ``.csv.gz``).

Columns used: ``cif`` (required) and ``material_id`` (optional; a row number otherwise). Files
with or without the leading unnamed index column are accepted. Rows whose CIF does not parse
are skipped and reported in one warning, never raised.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from matinvent.crystal import Crystal, CrystalError


@dataclass
class CrystalTable:
    """Parsed crystals with their ids and the other CSV columns (aligned row for row)."""

    crystals: list[Crystal]
    ids: list[str]
    properties: pd.DataFrame
    n_skipped: int = 0

    def __len__(self) -> int:
        return len(self.crystals)


def read_cdvae_csv(path: str | Path, limit: int | None = None, max_atoms: int | None = None) -> CrystalTable:
    """Read a CDVAE/DiffCSP CSV. ``limit`` keeps the first rows; ``max_atoms`` drops larger cells."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        df = pd.read_csv(path, nrows=limit)
    except Exception as exc:
        raise CrystalError(f"{path}: not a readable CSV: {exc}") from exc
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed:") and str(c) != ""]]
    if "cif" not in df.columns:
        raise CrystalError(f"{path}: no 'cif' column (columns: {list(df.columns)})")
    crystals, ids, keep = [], [], []
    skipped = too_big = 0
    has_id = "material_id" in df.columns
    for i, row in enumerate(df.itertuples(index=False)):
        cif = row.cif
        try:
            if not isinstance(cif, str):
                raise CrystalError("empty CIF")
            crystal = Crystal.from_cif(cif)
        except CrystalError:
            skipped += 1
            continue
        if max_atoms is not None and crystal.num_atoms > max_atoms:
            too_big += 1
            continue
        crystals.append(crystal)
        ids.append(str(row.material_id) if has_id else str(i))
        keep.append(i)
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} of {len(df)} rows whose CIF could not be parsed", stacklevel=2)
    if too_big:
        warnings.warn(f"{path}: dropped {too_big} crystals with more than {max_atoms} atoms", stacklevel=2)
    props = df.drop(columns=["cif"]).iloc[keep].reset_index(drop=True)
    return CrystalTable(crystals=crystals, ids=ids, properties=props, n_skipped=skipped)


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
