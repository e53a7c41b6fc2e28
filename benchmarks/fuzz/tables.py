"""Hostile extxyz files (bad frames between good ones) and CDVAE CSV files (bad rows between good ones).

Each builder returns the file's bytes and its expectations: ``rows`` (how many items a correct reader
yields, ``None`` when the damage makes that unknowable), ``min_rows``, ``good`` (id → frame/row that
must be scored), ``labels`` (id → reject | accept | any) and, for extxyz, ``frames`` (id → frame text,
for the independent check). ``error_ok``: a clean file-level error is a correct outcome.
"""

from __future__ import annotations

import gzip
import io
import re

import numpy as np
import pandas as pd

from fuzz.cif import _pick, model_of, mutate


def frame_text(structure, frame_id: str) -> str:
    """One extxyz frame of ``structure`` with ``id=frame_id`` in its comment line."""
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.info = {"id": frame_id}
    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    return buf.getvalue()


def _set_lattice(frame: str, values: list[str]) -> str:
    return re.sub(r'Lattice="[^"]*"', f'Lattice="{" ".join(values)}"', frame, count=1)


def _lattice(frame: str) -> list[str]:
    return re.search(r'Lattice="([^"]*)"', frame).group(1).split()


def _atom_lines(frame: str) -> tuple[list[str], list[str]]:
    lines = frame.splitlines(keepends=True)
    return lines[:2], lines[2:]


# each frame mutation: (text, label, keeps the line structure)
def _frame_mutation(rng: np.random.Generator, frame: str) -> tuple[str, str, str, bool]:
    head, atoms = _atom_lines(frame)
    L = _lattice(frame)
    kind = _pick(
        rng,
        [
            "singular",
            "nonfinite",
            "no_lattice",
            "left_handed",
            "species",
            "coord_nan",
            "coord_text",
            "too_many",
            "near_coincident",
            "count_huge",
            "count_bad",
            "count_off",
            "byte_flips",
            "invalid_utf8",
            "properties",
            "long_comment",
            "pbc_false",
        ],
    )
    if kind == "singular":
        bad = _pick(
            rng, [L[:3] * 2 + L[6:], ["0"] * 3 + L[3:], ["0"] * 9, L[:3] + [str(2 * float(x)) for x in L[:3]] + L[6:]]
        )
        return kind, _set_lattice(frame, bad), "reject", True
    if kind == "nonfinite":
        bad = list(L)
        bad[int(rng.integers(9))] = _pick(rng, ["nan", "inf", "-inf", "1e30"])
        return kind, _set_lattice(frame, bad), "reject", True
    if kind == "no_lattice":
        return kind, re.sub(r'Lattice="[^"]*" ', "", frame).replace(' pbc="T T T"', ""), "reject", True
    if kind == "left_handed":
        return kind, _set_lattice(frame, [str(-float(x)) for x in L[:3]] + L[3:]), "any", True
    if kind in ("species", "coord_nan", "coord_text"):
        i = int(rng.integers(len(atoms)))
        parts = atoms[i].split()
        if kind == "species":
            parts[0] = _pick(rng, ["X", "Vac", "Xx", "0", "Unknown"])
        else:
            parts[1 + int(rng.integers(3))] = "nan" if kind == "coord_nan" else _pick(rng, ["abc", "1,5", "--1"])
        atoms[i] = " ".join(parts) + "\n"
        return kind, "".join(head + atoms), "reject", True
    if kind == "too_many":
        n = int(rng.integers(201, 400))
        rows = [f"Na {3.6 * (i % 8):.3f} {3.6 * (i // 8 % 8):.3f} {3.6 * (i // 64):.3f}\n" for i in range(n)]
        return kind, f"{n}\n" + head[1] + "".join(rows), "reject", True
    if kind == "near_coincident":
        parts = atoms[0].split()
        moved = f"{parts[0]} {float(parts[1]) + _pick(rng, [0.0, 0.01, 0.05, 0.3]):.8f} {parts[2]} {parts[3]}\n"
        return kind, f"{len(atoms) + 1}\n" + head[1] + "".join(atoms) + moved, "reject", True
    if kind == "count_huge":
        return kind, f"{_pick(rng, [10**9, 10**18, 2**63])}\n" + head[1] + "".join(atoms), "reject", False
    if kind == "count_bad":
        return kind, f"{_pick(rng, ['-1', 'abc', '3.5', '0', '١٢', ''])}\n" + head[1] + "".join(atoms), "reject", False
    if kind == "count_off":
        return kind, f"{len(atoms) + _pick(rng, [-1, 1])}\n" + head[1] + "".join(atoms), "any", False
    if kind == "byte_flips":
        data = bytearray(frame.encode())
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(len(data)))] = int(rng.integers(32, 127))
        return kind, data.decode("latin-1"), "any", False
    if kind == "invalid_utf8":
        comment = head[1].rstrip("\n") + " note=\udcff\n"  # surrogate: written as a lone invalid byte below
        return kind, head[0] + comment + "".join(atoms), "any", True
    if kind == "properties":
        return kind, frame.replace("pos:R:3", _pick(rng, ["pos:R:2", "pos:S:3", "pos:Q:3"])), "any", True
    if kind == "long_comment":
        return kind, head[0] + head[1].rstrip("\n") + " x=" + "y" * 100_000 + "\n" + "".join(atoms), "accept", True
    return kind, frame.replace('pbc="T T T"', 'pbc="F F F"'), "any", True


def extxyz_case(rng: np.random.Generator, bases: list) -> tuple[str, bytes, dict]:
    """(mutation, file bytes, expectations) of an extxyz file with 1–2 bad frames among 3–6 frames."""
    n = int(rng.integers(3, 7))
    picks = [bases[int(rng.integers(len(bases)))] for _ in range(n)]
    frames = [frame_text(s, f"f{i}") for i, s in enumerate(picks)]
    hostile = sorted(rng.choice(n, size=int(rng.integers(1, 3)), replace=False).tolist())
    if rng.random() < 0.03:
        return (
            "empty",
            _pick(rng, [b"", b"\n\n", b"   \n"]),
            {"error_ok": True, "rows": None, "min_rows": 0, "intact": 0, "good": {}, "frames": {}},
        )
    labels, kinds, intact_until = {}, [], n  # frames before intact_until are cut exactly as written
    for i in hostile:
        kind, frames[i], labels[f"f{i}"], keeps = _frame_mutation(rng, frames[i])
        kinds.append(kind)
        if not keeps:
            intact_until = min(intact_until, i)
    data = "".join(frames).encode("utf-8", "surrogateescape")
    exp = {
        "rows": n if intact_until == n else None,
        "min_rows": min(intact_until + 1, n),
        "intact": intact_until,
        "good": {f"f{i}": picks[i] for i in range(n) if i not in hostile and i < intact_until},
        "labels": labels,
        "frames": {f"f{i}": frames[i] for i in range(n)},
    }
    return "+".join(kinds), data, exp


def csv_case(rng: np.random.Generator, bases: list) -> tuple[str, str, bytes, dict]:
    """(mutation, file suffix, bytes, expectations) of a CDVAE CSV with 1–2 bad rows among 3–6 rows."""
    from pymatgen.io.cif import CifWriter

    n = int(rng.integers(3, 7))
    picks = [bases[int(rng.integers(len(bases)))] for _ in range(n)]
    rows = [
        {"material_id": f"mp-{i}", "formation_energy_per_atom": -1.0 * i, "cif": str(CifWriter(s))}
        for i, s in enumerate(picks)
    ]
    labels, kinds = {}, []
    for i in sorted(rng.choice(n, size=int(rng.integers(1, 3)), replace=False).tolist()):
        kind = _pick(rng, ["empty", "blank", "missing", "garbage", "number", "hostile_cif", "hostile_cif"])
        if kind == "hostile_cif":
            name, text, label = mutate(rng, model_of(picks[i], f"row{i}"), semantic_only=True)
            kind = f"cif:{name}"
        else:
            text = {"empty": "", "blank": "   ", "missing": None, "garbage": "not a CIF\n_cell 3", "number": "5"}[kind]
            label = "reject"
        rows[i]["cif"], labels[str(i)] = text, label
        kinds.append(kind)
    good = {str(i): picks[i] for i in range(n) if str(i) not in labels}
    df = pd.DataFrame(rows)
    exp = {"rows": n, "min_rows": n, "good": good, "labels": labels, "error_ok": False}
    damage = _pick(
        rng,
        [
            "none",
            "none",
            "none",
            "drop_cif",
            "drop_id",
            "dup_id",
            "latin1",
            "ragged",
            "extra_field",
            "truncate",
            "header_only",
            "gzip",
            "gzip_truncated",
            "garbage",
            "crlf",
            "index",
        ],
    )
    kinds.append(damage)
    if damage == "drop_cif":
        df = df.drop(columns=["cif"])
        exp.update(rows=None, min_rows=0, error_ok=True, good={})
    elif damage == "drop_id":
        df = df.drop(columns=["material_id"])
    elif damage == "dup_id":
        df["material_id"] = "mp-0"
    data = df.to_csv(index=damage == "index").encode()
    if damage == "latin1":
        data = data.replace(b"mp-0", b"mp-\xe9\xff0", 1)
    elif damage == "ragged":
        lines = data.split(b"\n")
        lines.insert(len(lines) - 1, b"mp-x,1.0")
        data = b"\n".join(lines)
        exp.update(rows=None, min_rows=n)
    elif damage in ("extra_field", "truncate", "header_only", "garbage", "gzip_truncated"):
        exp.update(rows=None, min_rows=0, error_ok=True, good={})
        if damage == "extra_field":
            data += b"mp-y,1.0,data_x,extra,fields\n"
        elif damage == "truncate":
            data = data[: int(rng.integers(1, len(data)))]
        elif damage == "header_only":
            data = data.split(b"\n")[0] + b"\n"
        elif damage == "garbage":
            data = rng.integers(0, 256, size=int(rng.integers(1, 2048)), dtype=np.uint8).tobytes()
        else:
            data = gzip.compress(data)
            data = data[: int(rng.integers(10, len(data)))]
    elif damage == "gzip":
        data = gzip.compress(data)
    elif damage == "crlf":
        data = data.replace(b"\n", b"\r\n")
    suffix = ".csv.gz" if damage.startswith("gzip") else ".csv"
    return "+".join(kinds), suffix, data, exp
