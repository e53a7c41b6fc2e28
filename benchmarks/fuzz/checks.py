"""Independent physical checks of what the fuzzer scored: written here, not taken from matinvent.

A structure counts as invalid when its file, read token by token, holds a cell, occupancy or
symbol no solid has, or when its atoms, placed exactly as written (duplicates are not merged),
come closer than ``F_CONTACT`` × (r_cov,i + r_cov,j), or its density, volume per atom or size
lies outside what matinvent documents. ``value_mismatch`` also compares a scored property with
pymatgen's value for the structure as written (a b = −3 Å cell scored as |b| would differ).
"""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
from ase.data import chemical_symbols, covalent_radii

from fuzz.cif import CELL_KEYS as _CELL

F_CONTACT = 0.7  # matinvent.crystal.validity.F_COVALENT, as documented
DENSITY = (0.05, 30.0)  # g/cm³, matinvent.crystal.validity.DENSITY_WINDOW
MAX_LENGTH = 500.0  # Å
VOLUME_PER_ATOM = (1.0, 1000.0)  # Å³
MAX_ATOMS = 200
ELEMENTS = set(chemical_symbols[1:101])


def _number(text: str) -> float:
    """A CIF number as written (``4.0(3)`` → 4.0; replaced invalid bytes dropped, as the lenient decoding does); NaN
    for anything else (``.`` and ``?`` included: inapplicable and unknown are no numbers)."""
    try:
        return float(re.sub(r"\(\d*\)?$", "", text.replace("\ufffd", "").strip()))
    except ValueError:
        return math.nan


def _element(symbol: str) -> str | None:
    m = re.fullmatch(r"([A-Za-z]+)[+-]?\d*(?:\.\d+)?[+-]?", symbol.strip())
    name = m.group(1).capitalize() if m else None
    return name if name in ELEMENTS else None


def structure_violation(s) -> str:
    """Why the pymatgen ``Structure`` ``s`` is no plausible solid ("" when it is one)."""
    from pymatgen.core import Structure

    if len(s) == 0 or len(s) > MAX_ATOMS:
        return f"{len(s)} atoms"
    if not s.is_ordered:
        return "disordered"
    z = []
    for site in s:
        el = getattr(site.specie, "symbol", None)
        if el not in ELEMENTS:
            return f"species {site.specie}"
        z.append(chemical_symbols.index(el))
    L = np.asarray(s.lattice.matrix, float)
    lengths = np.linalg.norm(L, axis=1)
    if not np.all(np.isfinite(L)) or np.any(lengths <= 0) or np.any(lengths > MAX_LENGTH):
        return f"lattice lengths {lengths}"
    volume = abs(float(np.linalg.det(L)))
    if volume <= 1e-8 * float(np.prod(lengths)):
        return "singular lattice"
    if not VOLUME_PER_ATOM[0] <= volume / len(s) <= VOLUME_PER_ATOM[1]:
        return f"volume per atom {volume / len(s):.3g}"
    if not np.all(np.isfinite(s.frac_coords)):
        return "non-finite coordinates"
    if not DENSITY[0] <= s.density <= DENSITY[1]:
        return f"density {s.density:.3g}"
    r = covalent_radii[np.array(z)]
    s = Structure(s.lattice, s.species, np.mod(s.frac_coords, 1.0))  # unwrapped coordinates blow up the cell grid
    centers, neighbors, _, d = s.get_neighbor_list(F_CONTACT * 2 * float(r.max()) + 0.01)
    close = d < F_CONTACT * (r[centers] + r[neighbors])
    if np.any(close):
        k = int(np.argmax(close))
        return f"atoms {centers[k]} and {neighbors[k]} {d[k]:.3f} Å apart"
    return ""


def _raw_structure(block: dict, symbols: list[str]):
    """The structure exactly as a P1 block writes it (no site merging); ``None`` when not P1."""
    from pymatgen.core import Lattice, Structure

    ops = [" ".join(str(o).replace("'", "").split()).lower() for o in _column(block, "_symmetry_equiv_pos_as_xyz")]
    ops += [
        " ".join(str(o).replace("'", "").split()).lower() for o in _column(block, "_space_group_symop_operation_xyz")
    ]
    if any(op.replace(" ", "") != "x,y,z" for op in ops):
        return None
    coords = [[_number(v) for v in _column(block, f"_atom_site_fract_{x}")] for x in "xyz"]
    if not all(len(c) == len(symbols) for c in coords):
        return None
    lattice = Lattice.from_parameters(*(_number(block[k]) for k in _CELL))
    return Structure(lattice, [_element(s) for s in symbols], np.array(coords).T)


def _column(block: dict, key: str) -> list[str]:
    value = block.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def cif_violation(text: str):
    """(why the CIF text holds no plausible solid or "", the structure as written or ``None``)."""
    from pymatgen.io.cif import CifFile, CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            blocks = [{k.lower(): v for k, v in b.data.items()} for b in CifFile.from_str(text).data.values()]
        except Exception as exc:  # noqa: BLE001 - whatever pymatgen raises, the file is not a CIF
            return f"independent tokenizer failed: {exc}", None
    block = next((b for b in blocks if "_atom_site_fract_x" in b or "_atom_site_label" in b), None)
    if block is None:
        return "no atom-site loop", None
    labels = _column(block, "_atom_site_label")
    symbols = _column(block, "_atom_site_type_symbol") or [re.match(r"[A-Za-z]*", s).group(0) for s in labels]
    if len(symbols) > MAX_ATOMS:
        return f"{len(symbols)} atom sites", None
    if any(_element(s) is None for s in symbols):
        return f"symbols {symbols}", None
    for occ in _column(block, "_atom_site_occupancy"):
        if occ.strip() not in ("?", ".") and not abs(_number(occ) - 1) <= 1e-3:
            return f"occupancy {occ}", None
    for x in ("x", "y", "z"):
        if bad := [v for v in _column(block, f"_atom_site_fract_{x}") if not math.isfinite(_number(v))]:
            return f"fractional coordinate {bad[0][:20]!r} is no finite number", None
    if any(k not in block for k in _CELL):
        return "cell parameters missing", None
    a, b, c, al, be, ga = (_number(block[k]) for k in _CELL)
    if not all(math.isfinite(x) and 0 < x <= MAX_LENGTH for x in (a, b, c)):
        return f"cell lengths {a, b, c}", None
    if not all(math.isfinite(x) and 0 < x < 180 for x in (al, be, ga)):
        return f"cell angles {al, be, ga}", None
    ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
    if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-8:
        return "angles make no cell", None
    try:
        s = _raw_structure(block, symbols)
        if s is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = CifParser.from_str(text).parse_structures(primitive=False)[0]
    except Exception as exc:  # noqa: BLE001
        return f"independent parse failed: {type(exc).__name__}: {exc}", None
    return structure_violation(s), s


def frame_violation(frame: str):
    """(why an extxyz frame holds no plausible solid or "", the structure or ``None``)."""
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    lines = frame.splitlines(keepends=True)
    try:
        n = int(lines[0])  # a wrong count line: read the atoms it claims, as a reader cutting frames does
        atoms = read(io.StringIO("".join(lines[: n + 2])), format="extxyz")
        if any(s not in ELEMENTS for s in atoms.get_chemical_symbols()):
            return f"symbols {atoms.get_chemical_symbols()}", None
        s = AseAtomsAdaptor.get_structure(atoms)
    except Exception as exc:  # noqa: BLE001
        return f"independent read failed: {type(exc).__name__}: {exc}", None
    return structure_violation(s), s


def reference_value(s, prop: str) -> float:
    """The property of ``s`` as pymatgen computes it (density g/cm³ or production HHI)."""
    if prop == "density":
        return float(s.density)
    from pymatgen.analysis.hhi import HHIModel

    value = HHIModel().get_hhi(s.composition)[0]
    return math.nan if value is None else float(value)


def value_mismatch(s, prop: str, value: float) -> str:
    """Why a scored ``value`` is not ``prop`` of ``s`` as written ("" when it is)."""
    ref = reference_value(s, prop)
    if math.isfinite(value) and not (math.isfinite(ref) and abs(value - ref) <= 1e-6 * max(1.0, abs(ref))):
        return f"scored {prop} {value:.6g} but the structure as written has {ref:.6g}"
    return ""
