"""Files of ``matinvent recheck``: relaxed-hit CIFs, the per-hit CSV, JSON written atomically."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.io.cif import CifWriter


def write_cifs(folder: Path, rows: list[dict[str, Any]], relaxed: list[Any]) -> None:
    """Relaxed structures as CIFs; CIFs of an earlier recheck in ``folder`` are removed first."""
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.cif"):
        old.unlink()
    for row, s in zip(rows, relaxed, strict=True):
        if s is None:
            continue
        name = f"{row['rank']:03d}_{re.sub(r'[^A-Za-z0-9]', '', row['formula']) or 'x'}_{row['id']}.cif"
        CifWriter(s).write_file(str(folder / name))
        row["cif"] = f"{folder.name}/{name}"


def flat(row: dict[str, Any], properties: list[str]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("original", "relaxed", "mlip")}
    for p in properties:
        out[p] = row["original"][p]
        out[f"{p}_relaxed"] = row["relaxed"][p]
        if p in row["mlip"]:
            out[f"{p}_mlip"] = row["mlip"][p]
    return out


def write_csv(path: Path, rows: list[dict[str, Any]], properties: list[str]) -> None:
    table = pd.DataFrame([flat(r, properties) for r in rows])
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


IDENTITY = ("task", "method", "seed", "budget")
HEADLINE_KEYS = ("evals_per_surviving_hit", "survival", "surviving_hits", "evals_per_hit", "hits", "evaluations")


def headline(block: dict[str, Any], evaluations: int | None) -> dict[str, Any]:
    """The summary's headline from a recheck block: evaluations per surviving distinct hit (an estimate when
    only a subset was checked), the surviving fraction and the surviving hits it implies."""
    frac, n_hits = block.get("frac_survive"), block.get("n_hits_distinct")
    survivors = None if frac is None or n_hits is None else frac * n_hits
    return {
        "evals_per_surviving_hit": evaluations / survivors if survivors and evaluations is not None else None,
        "survival": frac,
        "surviving_hits": survivors,
    }


def merge_summary(path: Path, block: dict[str, Any]) -> None:
    """Add ``"recheck": block`` to an existing ``summary.json`` (nothing when there is none), and its headline
    (:func:`headline`) at the top, after the run's identity."""
    if not path.is_file():
        return
    summary = json.loads(path.read_text())
    summary.update(headline(block, summary.get("evaluations")))
    summary["recheck"] = block
    first = [k for k in (*IDENTITY, *HEADLINE_KEYS) if k in summary]
    write_json(path, {**{k: summary[k] for k in first}, **summary})


def clean(value: Any) -> Any:
    """JSON-ready: NaN/inf become None, numpy scalars plain Python."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
