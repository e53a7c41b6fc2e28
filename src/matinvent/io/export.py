"""Exporting a run's crystals (its hits, or every scored crystal) with their properties.

Rows come from the run memory (``RUN/memory.sqlite``, :mod:`matinvent.io.run_memory`); each crystal is
rebuilt from its stored CIF (lossless, P1). Three formats, all readable by pymatgen / ASE:

- ``extxyz`` — one file, one frame per crystal, the properties in each frame's ``info``;
- ``cif``    — a folder: ``0001_<formula>.cif`` … (pymatgen ``CifWriter``; the properties as
  ``_matinvent_<key>`` data items) and ``properties.csv`` (one row per file);
- ``ase-db`` — an ASE database (``ase.db.connect``): one row per crystal, the properties as
  key-value pairs (strings ASE would refuse as keys' values, e.g. a run id that reads as a number, go
  to the row's ``data``).

The structure written is the one the properties refer to: the relaxed one when the loop relaxed
(``relax: mlip``; key ``structure = "relaxed"``, and the ``cif`` format also writes the generated one
beside it as ``0001_<formula>_generated.cif``), else the generated one (``structure = "generated"``).

Keys per crystal: ``memory_id, run_id, iteration, idx, reduced_formula``, one per task property
(NaN left out), ``reward, filtered_reward, hit``, with a relaxation ``relax_e_hull`` (eV/atom),
``relax_energy_drop`` (eV/atom) and ``relax_rmsd`` (Å, generated → relaxed) and, when ``run.json`` names them,
``task, method``.
A property whose name ASE reserves (``energy``, ``stress``, ``natoms``, an element symbol …) is
written as ``matinvent_<name>``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matinvent.crystal.record import Crystal, CrystalError
from matinvent.io.run_memory import FIXED, RELAXED, SCORES, read_memory

FORMATS = ("extxyz", "cif", "ase-db")
CIF_PREFIX = "_matinvent_"
INDEX = "properties.csv"
_SAFE = re.compile(r"[^A-Za-z0-9]+")


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how many crystals it holds."""

    path: Path
    n: int
    fmt: str


def memory_properties(memory: pd.DataFrame) -> list[str]:
    """The task-property columns of a run memory (everything but the fixed and score columns)."""
    skip = set(FIXED) | set(SCORES) | {"id", "created"} | {c for c, _ in RELAXED}
    return [c for c in memory.columns if c not in skip]


def select_rows(
    memory: pd.DataFrame, hits_only: bool = True, top: int | None = None, distinct: bool = True
) -> pd.DataFrame:
    """Valid, scored crystals (only hits with ``hits_only``), best reward first (ties: sampling order),
    one per reduced formula with ``distinct``, at most ``top`` (``None`` or 0: all)."""
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    df = memory[(memory["valid"] == 1) & (memory["failed"] != 1)]
    if hits_only:
        df = df[df["hit"] == 1]
    df = df.assign(_order=range(len(df))).sort_values(["reward", "_order"], ascending=[False, True], kind="stable")
    if distinct:
        df = df.drop_duplicates("formula")
    if top:
        df = df.head(top)
    return df.drop(columns="_order").reset_index(drop=True)


def _ase_key(name: str) -> str:
    from ase.db.core import reserved_keys

    return f"matinvent_{name}" if name in reserved_keys else name


def row_properties(row: pd.Series, properties: list[str], run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keys of one memory row (see the module docstring): numbers, booleans and strings."""
    out: dict[str, Any] = {
        "memory_id": int(row["id"]),
        "run_id": str(row["run_id"]),
        "iteration": int(row["iteration"]),
        "idx": int(row["idx"]),
        "reduced_formula": str(row["formula"]),
    }
    for prop in properties:
        value = row[prop]
        if value is not None and math.isfinite(float(value)):
            out[_ase_key(prop)] = float(value)
    out["reward"] = float(row["reward"])
    out["filtered_reward"] = float(row["filtered_reward"])
    out["hit"] = bool(row["hit"])
    out["structure"] = "relaxed" if _relaxed_cif(row) else "generated"
    for key in ("relax_e_hull", "relax_energy_drop", "relax_rmsd"):
        value = row.get(key)
        if value is not None and math.isfinite(float(value)):
            out[key] = float(value)
    for key in ("task", "method"):
        if run_info and isinstance(run_info.get(key), str):
            out[key] = run_info[key]
    return out


def _relaxed_cif(row: pd.Series) -> str | None:
    cif = row.get("relaxed_cif")
    return cif if isinstance(cif, str) and cif.strip() else None


def _crystal(row: pd.Series, memory_path: Path, generated: bool = False) -> Crystal:
    cif = row["cif"] if generated else (_relaxed_cif(row) or row["cif"])
    if not isinstance(cif, str) or not cif.strip():
        raise CrystalError(f"{memory_path}: row id {int(row['id'])} has no CIF")
    try:
        return Crystal.from_cif(cif, max_atoms=None)
    except CrystalError as exc:
        raise CrystalError(f"{memory_path}: row id {int(row['id'])}: {exc}") from exc


def _prepare(out: Path, fmt: str, overwrite: bool) -> None:
    """Refuse an existing ``out`` (a non-empty folder for ``cif``) unless ``overwrite``, which removes it."""
    if not out.exists() or (fmt == "cif" and out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    if fmt == "cif" and not out.is_dir():
        raise FileExistsError(f"{out} is a file; the cif format writes a folder")
    if fmt != "cif" and out.is_dir():
        raise FileExistsError(f"{out} is a folder; the {fmt} format writes one file")
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink()


def _write_extxyz(out: Path, crystals: list[Crystal], keys: list[dict[str, Any]]) -> None:
    from ase.io import write

    frames = []
    for crystal, info in zip(crystals, keys, strict=True):
        atoms = crystal.to_atoms()
        atoms.info.update(info)
        frames.append(atoms)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(str(out), frames, format="extxyz")


def _write_cifs(
    out: Path, crystals: list[Crystal], keys: list[dict[str, Any]], generated: list[Crystal | None] | None = None
) -> None:
    from pymatgen.io.cif import CifWriter

    out.mkdir(parents=True, exist_ok=True)
    index = []
    generated = generated or [None] * len(crystals)
    for rank, (crystal, info, start) in enumerate(zip(crystals, keys, generated, strict=True), start=1):
        stem = f"{rank:04d}_{_SAFE.sub('-', info['reduced_formula']) or 'unknown'}"
        files = {"file": f"{stem}.cif"}
        if start is not None:
            files["generated_file"] = f"{stem}_generated.cif"
            CifWriter(start.to_structure(), significant_figures=10).write_file(out / files["generated_file"])
        writer = CifWriter(crystal.to_structure(), significant_figures=10)
        block = next(iter(writer.cif_file.data.values()))
        for key, value in info.items():
            block.data[CIF_PREFIX + key] = repr(value) if isinstance(value, float) else str(value)
        (out / files["file"]).write_text(str(writer))
        index.append({**files, **info})
    pd.DataFrame(index).to_csv(out / INDEX, index=False)


def _write_ase_db(out: Path, crystals: list[Crystal], keys: list[dict[str, Any]]) -> None:
    from ase.db import connect
    from ase.db.core import check

    out.parent.mkdir(parents=True, exist_ok=True)
    with connect(str(out), type="db", append=False) as db:
        for crystal, info in zip(crystals, keys, strict=True):
            pairs, data = {}, {}
            for key, value in info.items():
                try:
                    check({key: value})
                    pairs[key] = value
                except ValueError:  # e.g. a string that reads as a number
                    data[key] = value
            db.write(crystal.to_atoms(), key_value_pairs=pairs, data=data)


_WRITERS = {"extxyz": _write_extxyz, "cif": _write_cifs, "ase-db": _write_ase_db}


def export_run(
    run_dir: str | Path,
    out: str | Path,
    fmt: str = "extxyz",
    hits_only: bool = True,
    top: int | None = None,
    distinct: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Write the crystals of :func:`select_rows` of ``run_dir``'s memory to ``out`` in ``fmt``.

    Raises ``ValueError`` for an unknown format or when nothing matches, ``FileNotFoundError`` for a
    folder without a memory and ``FileExistsError`` for an existing ``out`` without ``overwrite``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (choose from: {', '.join(FORMATS)})")
    run_dir, out = Path(run_dir), Path(out)
    memory = read_memory(run_dir)
    rows = select_rows(memory, hits_only=hits_only, top=top, distinct=distinct)
    if not len(rows):
        what = "hits" if hits_only else "valid scored crystals"
        raise ValueError(f"{run_dir / 'memory.sqlite'} holds no {what} ({len(memory)} crystals in all)")
    _prepare(out, fmt, overwrite)
    run_info = _run_info(run_dir)
    properties = memory_properties(memory)
    memory_path = run_dir / "memory.sqlite"
    crystals = [_crystal(row, memory_path) for _, row in rows.iterrows()]
    keys = [row_properties(row, properties, run_info) for _, row in rows.iterrows()]
    rechecked = recheck_keys(run_dir)
    for key, (_, row) in zip(keys, rows.iterrows(), strict=True):
        key.update(rechecked.get(int(row["id"]), {}))
    if fmt == "cif":
        starts = [_crystal(row, memory_path, True) if _relaxed_cif(row) else None for _, row in rows.iterrows()]
        _write_cifs(out, crystals, keys, starts)
    else:
        _WRITERS[fmt](out, crystals, keys)
    return ExportResult(out, len(crystals), fmt)


RECHECK_COLUMNS = ("e_above_hull", "still_hit", "survives", "rmsd")  # of recheck.csv, exported as recheck_<col>


def recheck_keys(run_dir: Path) -> dict[int, dict[str, Any]]:
    """memory id → ``recheck_<column>`` keys of ``matinvent recheck``'s ``recheck.csv`` (``{}`` without one)."""
    path = run_dir / "recheck.csv"
    if not path.exists():
        return {}
    try:
        table = pd.read_csv(path)
        ids = table["id"].astype(int)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a recheck table of matinvent recheck ({type(exc).__name__}: {exc})") from exc
    out: dict[int, dict[str, Any]] = {}
    for i, (_, row) in zip(ids, table.iterrows(), strict=True):
        keys: dict[str, Any] = {}
        for col in RECHECK_COLUMNS:
            value = row.get(col)
            if isinstance(value, bool | np.bool_) or (isinstance(value, str) and value in ("True", "False")):
                keys[f"recheck_{col}"] = value in (True, "True")
            elif value is not None and not isinstance(value, str) and math.isfinite(float(value)):
                keys[f"recheck_{col}"] = float(value)
        out[int(i)] = keys
    return out


def _run_info(run_dir: Path) -> dict[str, Any]:
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
