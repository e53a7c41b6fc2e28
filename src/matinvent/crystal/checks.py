"""Cheap sanity checks run on a structure file before any expensive parsing or neighbour search.

Every check is pure and returns a reason (``""`` when fine), so that a reader can turn a bad
item into a row with that reason instead of an exception. What they refuse:

- more than ``MAX_ATOMS`` atoms (counted from the CIF atom-site loop or the xyz count line);
- non-element symbols (``Vac``, ``Unknown``, ``X``, …), which parsers would otherwise read as
  the element their first letters spell (``Vac`` → V, ``Unknown`` → U);
- occupancies that are partial, zero, negative or not finite (parsers drop or merge such sites);
- cells with non-finite or non-positive lengths, lengths above ``MAX_LENGTH``, angles outside
  (0°, 180°) or angles that make no cell, and volumes per atom outside ``VOLUME_PER_ATOM``.

The crystal readers (``matinvent.crystal.record``) apply all but the volume per atom, which only the
scoring reader applies: a generated sample that is merely implausible stays a structure, for the
validity gate to classify.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from ase.data import chemical_symbols

MAX_ATOMS = 200  # default cap on atoms per structure: MP-20 has ≤ 20, MPTS-52 ≤ 52
MAX_LENGTH = 500.0  # Å; beyond any crystal cell in MP/ICSD-like data, where neighbour searches blow up
VOLUME_PER_ATOM = (1.0, 1000.0)  # Å³/atom; MP-20 spans 5.8 (diamond-like) to 202: wide margins both sides
OCCUPANCY_TOL = 1e-3  # |occupancy − 1| allowed for a fully occupied site (CIF rounding)

_ELEMENTS = frozenset(chemical_symbols[1:101])  # Z = 1..100, matching crystal.MAX_Z ("X" is ASE's Z = 0)
_SYMBOL = re.compile(r"([A-Za-z]+)([+-]?\d*(?:\.\d+)?[+-]?)")  # element, optional charge ("Fe3+", "O2-", "Fe+3")
_UNCERTAINTY = re.compile(r"\(\d+\)$")  # CIF standard uncertainty: "4.012(3)"


def decode_text(data: bytes) -> tuple[str, bool]:
    """(text, replaced): UTF-8 text (BOM dropped) with invalid bytes replaced by U+FFFD; ``replaced`` if any were."""
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="replace"), True


def check_atom_count(n: int, max_atoms: int | None = MAX_ATOMS) -> str:
    """Reason if ``n`` is not in 1..``max_atoms`` (``None``: no cap)."""
    if n < 1:
        return "no atoms"
    if max_atoms is not None and n > max_atoms:
        return f"{n} atoms > max_atoms {max_atoms}"
    return ""


def check_symbols(symbols: Sequence[str]) -> str:
    """Reason if a symbol (optionally with an oxidation state, ``Fe3+``) is not an element of Z 1..100."""
    for symbol in symbols:
        m = _SYMBOL.fullmatch(symbol.strip())
        if m is None or m.group(1).capitalize() not in _ELEMENTS:
            return f"unknown element: non-element symbol '{symbol}'"
    return ""


def check_occupancies(occupancies: Sequence[float], labels: Sequence[str] | None = None) -> str:
    """Reason if an occupancy is not finite, ≤ 0, partial or above 1 (± ``OCCUPANCY_TOL``)."""
    for i, occ in enumerate(occupancies):
        site = f" at site {labels[i]}" if labels is not None and i < len(labels) else f" at site {i}"
        if not math.isfinite(occ) or occ <= 0:
            return f"non-physical occupancy {occ:g}{site}"
        if occ < 1 - OCCUPANCY_TOL:
            return f"partial occupancy {occ:g}{site} (disordered structures are not supported)"
        if occ > 1 + OCCUPANCY_TOL:
            return f"occupancy {occ:g} > 1{site}"
    return ""


def check_cell_parameters(lengths: Sequence[float], angles: Sequence[float]) -> str:
    """Reason if lengths (a, b, c) Å or angles (α, β, γ) degrees are non-finite, absurd, or make no cell."""
    for name, x in zip("abc", lengths, strict=True):
        if not math.isfinite(x) or x <= 0 or x > MAX_LENGTH:
            return f"cell length {name} = {x:g} Å outside (0, {MAX_LENGTH:g}]"
    for name, x in zip(("alpha", "beta", "gamma"), angles, strict=True):
        if not math.isfinite(x) or not 0 < x < 180:
            return f"cell angle {name} = {x:g}° outside (0, 180)"
    ca, cb, cg = (math.cos(math.radians(x)) for x in angles)
    if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-8:  # (V / abc)²: ~0 when the vectors are coplanar
        return f"cell angles {tuple(float(x) for x in angles)}° make no cell (volume ≤ 0)"
    return ""


def check_lattice(L: np.ndarray) -> str:
    """Reason if the lattice ``L`` (3, 3) Å, rows = lattice vectors, is non-finite, absurdly long or singular."""
    L = np.asarray(L, dtype=np.float64)
    if L.shape != (3, 3) or not np.all(np.isfinite(L)):
        return "lattice is not a finite 3 × 3 matrix"
    lengths = np.linalg.norm(L, axis=1)
    if np.any(lengths <= 0):
        return "cell has a zero-length lattice vector (no 3-D cell)"
    if np.any(lengths > MAX_LENGTH):
        return f"cell length {lengths.max():g} Å > {MAX_LENGTH:g} Å"
    volume = abs(float(np.linalg.det(L)))
    if volume <= 1e-8 * float(np.prod(lengths)):
        return f"cell is singular (volume {volume:.3g} Å³)"
    return ""


def check_volume_per_atom(volume: float, n_atoms: int) -> str:
    """Reason if ``volume`` Å³ / ``n_atoms`` lies outside ``VOLUME_PER_ATOM`` (no solid is that dense or sparse)."""
    per_atom = volume / max(n_atoms, 1)
    if not VOLUME_PER_ATOM[0] <= per_atom <= VOLUME_PER_ATOM[1]:
        return f"volume per atom {per_atom:.3g} Å³ outside [{VOLUME_PER_ATOM[0]:g}, {VOLUME_PER_ATOM[1]:g}]"
    return ""


def cif_number(value: str) -> float:
    """A CIF numeric value (``4.012(3)`` → 4.012); ``?`` / ``.`` (unknown) → NaN; ``ValueError`` otherwise."""
    value = _UNCERTAINTY.sub("", value.strip())
    return math.nan if value in ("?", ".") else float(value)


def _lower(data: Mapping[str, str | list[str]]) -> dict[str, list[str]]:
    return {k.lower(): ([v] if isinstance(v, str) else list(v)) for k, v in data.items()}


def cif_atom_rows(data: Mapping[str, str | list[str]]) -> int:
    """Rows of a tokenised CIF block's atom-site loop: the atom count before symmetry expansion (0: no loop)."""
    d = _lower(data)
    return next((len(d[k]) for k in ("_atom_site_fract_x", "_atom_site_cartn_x", "_atom_site_label") if k in d), 0)


def check_cif_block(data: Mapping[str, str | list[str]]) -> str:
    """Reason if a tokenised CIF block (keys → value or loop column) has bad symbols, occupancies or cell."""
    d = _lower(data)
    labels = d.get("_atom_site_label")
    if "_atom_site_type_symbol" in d:
        symbols = d["_atom_site_type_symbol"]
    else:  # labels carry a site index ("Fe1", "O2a"): keep the leading letters
        symbols = [re.match(r"[A-Za-z]*", s).group(0) for s in labels or []]
    if reason := check_symbols(symbols):
        return reason
    raw_occ = [v.strip() for v in d.get("_atom_site_occupancy", [])]
    for axis in ("x", "y", "z"):
        if any(v.strip() in ("?", ".") for v in d.get(f"_atom_site_fract_{axis}", [])):
            return f"fractional coordinate {axis} is '?' or '.' (pymatgen would read it as 0)"
    try:  # "?" (unknown) and "." (inapplicable): the CIF default, fully occupied
        occ = [1.0 if v in ("?", ".") else cif_number(v) for v in raw_occ]
    except ValueError as exc:
        return f"occupancy is not a number ({exc})"
    if reason := check_occupancies(occ, labels):
        return reason
    keys = [f"_cell_length_{x}" for x in "abc"] + [f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma")]
    try:
        params = [cif_number(d[k][0]) if k in d else math.nan for k in keys]
    except ValueError as exc:
        return f"cell parameter is not a number ({exc})"
    return check_cell_parameters(params[:3], params[3:])


def split_xyz_frames(text: str, max_atoms: int | None = MAX_ATOMS) -> Iterator[tuple[str | None, str]]:
    """(frame text, "") or (None, reason) per frame of an (ext)xyz text, from the count lines alone.

    A frame whose count exceeds ``max_atoms`` is skipped unread; a count the rest of the text cannot
    hold (a truncated frame, or a count line of 10⁹) or a line that is no count ends the file.
    """
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines):
        head = lines[start].strip()
        if not head:
            start += 1
            continue
        if not re.fullmatch(r"[0-9]+", head):
            yield None, f"line {start + 1}: expected an atom count, got {head[:40]!r}; rest of the file not read"
            return
        n = int(head)
        left = len(lines) - start - 2
        if left < n:
            yield None, f"count line {start + 1} claims {n} atoms but only {max(left, 0)} lines follow"
            return
        reason = check_atom_count(n, max_atoms)
        yield (None, reason) if reason else ("".join(lines[start : start + n + 2]), "")
        start += n + 2
