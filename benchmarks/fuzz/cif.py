"""Hostile CIF files: a small CIF model rendered to text, and the mutations a careless or unlucky user makes.

Each mutation returns ``(data, label)``: the file's text or bytes and what a correct reader must do with
it: ``reject`` (physically invalid by construction: never scored), ``accept`` (a good structure written
oddly: must be scored) or ``any`` (unknown: the independent checks of ``fuzz.checks`` decide).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

CELL_KEYS = (
    "_cell_length_a",
    "_cell_length_b",
    "_cell_length_c",
    "_cell_angle_alpha",
    "_cell_angle_beta",
    "_cell_angle_gamma",
)
BAD_LENGTHS = [
    "-3.0",
    "0",
    "0.0",
    "-0.0",
    "1e30",
    "1e6",
    "501",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "?",
    ".",
    "abc",
    "1e-5",
    "0.001",
    "-5.64(2)",
    "1e308",
    "1e309",
]
BAD_ANGLES = ["0", "180", "-90", "200", "nan", "inf", "360", "1e9", "-1e-9", "179.9999999", "?", "abc"]
NO_CELL = [("170", "170", "90"), ("120", "120", "120"), ("10", "10", "30"), ("90", "90", "1e-7"), ("60", "60", "179.9")]
BAD_OCC = ["0", "-1", "nan", "0.5", "1.5", "abc", "-0", "1e-9", "inf", "0.998", "2"]
OK_OCC = ["0.9995", "1.0(0)", "?", "1.0005", ".", "1.000"]
BAD_SYMBOLS = ["Vac", "Unknown", "X", "Xx", "D", "T", "Og", "Uuo", "Ee", "0", "Q", "Fe3+x"]
BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xe9", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]


@dataclass
class CifModel:
    """A P1 CIF: six cell values and one row per site (symbol, label, x, y, z, occupancy), all as text."""

    name: str
    cell: list[str]
    sites: list[list[str]]
    symops: list[str] = field(default_factory=lambda: ["x, y, z"])
    drop: frozenset[str] = frozenset()  # parts left out: cell keys, "symops", "loop", "type_symbol", "occupancy"
    header: str = "# written by benchmarks/fuzz_inputs.py"

    def render(self) -> str:
        lines = [self.header, f"data_{self.name}"]
        lines += [f"{k}   {v}" for k, v in zip(CELL_KEYS, self.cell, strict=True) if k not in self.drop]
        if "symops" not in self.drop:
            lines += ["loop_", " _symmetry_equiv_pos_site_id", " _symmetry_equiv_pos_as_xyz"]
            lines += [f"  {i + 1}  '{op}'" for i, op in enumerate(self.symops)]
        if "loop" not in self.drop:
            cols = [
                c for c in ("type_symbol", "label", "fract_x", "fract_y", "fract_z", "occupancy") if c not in self.drop
            ]
            lines += ["loop_", *(f" _atom_site_{c}" for c in cols)]
            index = {"type_symbol": 0, "label": 1, "fract_x": 2, "fract_y": 3, "fract_z": 4, "occupancy": 5}
            lines += ["  " + "  ".join(row[index[c]] for c in cols) for row in self.sites]
        return "\n".join(lines) + "\n"

    def lattice(self):
        from pymatgen.core import Lattice

        return Lattice.from_parameters(*(float(v) for v in self.cell))


def model_of(structure, name: str) -> CifModel:
    """The P1 model of a pymatgen ``Structure`` (labels ``Na0``, ``Cl1``, …)."""
    lat = structure.lattice
    cell = [f"{x:.8f}" for x in (*lat.abc, *lat.angles)]
    sites = [
        [site.specie.symbol, f"{site.specie.symbol}{i}", *(f"{x:.8f}" for x in site.frac_coords), "1"]
        for i, site in enumerate(structure)
    ]
    return CifModel(name=name, cell=cell, sites=sites)


def _with_site_value(m: CifModel, rng: np.random.Generator, column: int, value: str) -> CifModel:
    sites = [list(s) for s in m.sites]
    sites[int(rng.integers(len(sites)))][column] = value
    return replace(m, sites=sites)


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _cell_length(rng, m):
    cell = list(m.cell)
    cell[int(rng.integers(3))] = _pick(rng, BAD_LENGTHS)
    return replace(m, cell=cell).render(), "reject"


def _cell_length_ok(rng, m):
    i = int(rng.integers(3))
    cell = list(m.cell)
    cell[i] = _pick(rng, [f"{cell[i]}(2)", f"{cell[i]}0000001", f"+{cell[i]}", f" {cell[i]}"])
    return replace(m, cell=cell).render(), "any"


def _cell_angle(rng, m):
    cell = list(m.cell)
    cell[3 + int(rng.integers(3))] = _pick(rng, BAD_ANGLES)
    return replace(m, cell=cell).render(), "reject"


def _no_cell(rng, m):
    return replace(m, cell=[*m.cell[:3], *_pick(rng, NO_CELL)]).render(), "reject"


def _angles_changed(rng, m):
    return replace(
        m, cell=[*m.cell[:3], *_pick(rng, [("60", "60", "60"), ("80", "95", "100"), ("90", "90", "120")])]
    ).render(), "any"


def _occupancy(rng, m):
    return _with_site_value(m, rng, 5, _pick(rng, BAD_OCC)).render(), "reject"


def _occupancy_ok(rng, m):
    return _with_site_value(m, rng, 5, _pick(rng, OK_OCC)).render(), "accept"


def _symbol(rng, m):
    return _with_site_value(m, rng, 0, _pick(rng, BAD_SYMBOLS)).render(), "reject"


def _symbol_label_only(rng, m):
    sites = [list(s) for s in m.sites]
    sites[int(rng.integers(len(sites)))][1] = _pick(rng, ["Vac1", "X1", "Unknown1", "Xx2"])
    return replace(m, sites=sites, drop=m.drop | {"type_symbol"}).render(), "reject"


def _symbol_other(rng, m):
    return _with_site_value(m, rng, 0, _pick(rng, ["na", "NA", "Cl1-", "Fe3+", "O2-", "K", "Fe+3"])).render(), "any"


def _coordinate(rng, m):
    value = _pick(rng, ["nan", "inf", "-inf", "?", ".", "abc", "1e30", "-1e30", "1e308", "0.5e3", "1" + "0" * 5000])
    label = "reject" if value in ("nan", "inf", "-inf") else "any"
    return _with_site_value(m, rng, 2 + int(rng.integers(3)), value).render(), label


def _duplicate(rng, m):
    site = list(m.sites[int(rng.integers(len(m.sites)))])
    site[1] = f"{site[0]}{len(m.sites)}"
    return replace(m, sites=[*m.sites, site]).render(), "reject"


def _near_coincident(rng, m):
    """A copy of a site moved by 0 … 0.3 Å (closer than any covalent-radius contact allows)."""
    i = int(rng.integers(len(m.sites)))
    d = _pick(rng, [0.0, 1e-4, 1e-3, 0.01, 0.05, 0.3])
    step = rng.normal(size=3)
    step *= d / np.linalg.norm(step)
    lat = m.lattice()
    frac = np.array([float(x) for x in m.sites[i][2:5]]) + lat.get_fractional_coords(step)
    symbol = _pick(rng, [s[0] for s in m.sites])
    site = [symbol, f"{symbol}{len(m.sites)}", *(f"{x:.8f}" for x in frac), "1"]
    return replace(m, sites=[*m.sites, site]).render(), "reject"


def _grid(n: int, symbol: str = "Na") -> list[list[str]]:
    k = math.ceil(n ** (1 / 3))
    pts = [(i / k, j / k, l / k) for i in range(k) for j in range(k) for l in range(k)][:n]
    return [[symbol, f"{symbol}{i}", *(f"{x:.6f}" for x in p), "1"] for i, p in enumerate(pts)]


def _big_loop(rng, m):
    n = _pick(rng, [201, 250, 1000, 5000, 20000])
    return replace(m, cell=["90", "90", "90", "90", "90", "90"], sites=_grid(n)).render(), "reject"


def _max_loop_ok(rng, m):
    """200 Na on a 3.6 Å grid: the largest structure the default cap allows, physically fine."""
    return replace(m, cell=["21.6", "21.6", "21.6", "90", "90", "90"], sites=_grid(200)).render(), "accept"


def _symmetry_explosion(rng, m):
    """k general positions of Fm-3m (192 operations): 192 k atoms after expansion."""
    from pymatgen.symmetry.groups import SpaceGroup

    ops = [op.as_xyz_str() for op in SpaceGroup("Fm-3m").symmetry_ops]
    k = _pick(rng, [1, 2, 5, 10])
    sites = [["Na", f"Na{i}", *(f"{x:.5f}" for x in 0.05 + 0.4 * rng.random(3)), "1"] for i in range(k)]
    label = "any" if k == 1 else "reject"  # 192 atoms fit under the cap of 200
    return replace(m, cell=["30", "30", "30", "90", "90", "90"], sites=sites, symops=ops).render(), label


def _missing(rng, m):
    part = _pick(rng, ["loop", "cell", "symops", "type_symbol", "occupancy"])
    if part == "cell":
        return replace(m, drop=m.drop | {_pick(rng, list(CELL_KEYS))}).render(), "reject"
    label = {"loop": "reject", "symops": "any", "type_symbol": "accept", "occupancy": "accept"}[part]
    return replace(m, drop=m.drop | {part}).render(), label


def _degenerate(rng, m):
    return _pick(
        rng, ["", "data_", "data_x\n", "loop_\n", "# only a comment\n", "\n\n\n", "data_x\nloop_\n_atom_site_label\n"]
    ), "reject"


def _two_blocks(rng, m):
    bad, _ = _cell_length(rng, replace(m, name="second"))
    good = m.render()
    return (good + bad if rng.random() < 0.5 else bad + good), "any"


def _long_comment(rng, m):
    return "#" + "x" * int(_pick(rng, [10_000, 1_000_000])) + "\n" + m.render(), "accept"


def _many_blocks(rng, m):
    return "".join(f"data_b{i}\n_cell_length_a 1\n" for i in range(2000)) + m.render(), "any"


def _tabs(rng, m):
    return m.render().replace("  ", "\t"), "accept"


def _byte_flips(rng, m):
    data = bytearray(m.render().encode())
    for _ in range(int(rng.integers(1, 9))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    return bytes(data), "any"


def _invalid_utf8(rng, m):
    data = m.render().encode()
    at = int(rng.integers(len(data)))
    return data[:at] + _pick(rng, BAD_UTF8) + data[at:], "any"


def _latin1_comment(rng, m):
    return b"# r\xe9sum\xe9 \xb5m \xff\n" + m.render().encode(), "accept"


def _bom_crlf(rng, m):
    text = m.render()
    return _pick(rng, [b"\xef\xbb\xbf" + text.encode(), text.replace("\n", "\r\n").encode()]), "accept"


def _utf16(rng, m):
    return m.render().encode("utf-16"), "any"


def _nul_bytes(rng, m):
    data = m.render().encode()
    at = int(rng.integers(len(data)))
    return data[:at] + b"\x00" * int(rng.integers(1, 100)) + data[at:], "any"


def _truncate(rng, m):
    data = m.render().encode()
    return data[: int(rng.integers(len(data)))], "any"


def _garbage(rng, m):
    return rng.integers(0, 256, size=int(rng.integers(0, 4096)), dtype=np.uint8).tobytes(), "any"


Mutation = Callable[[np.random.Generator, CifModel], tuple[str | bytes, str]]
# (name, weight, mutation): semantic mutations return text, byte-level ones bytes
MUTATIONS: list[tuple[str, float, Mutation]] = [
    ("cell_length", 3, _cell_length),
    ("cell_length_ok", 1, _cell_length_ok),
    ("cell_angle", 3, _cell_angle),
    ("no_cell", 1.5, _no_cell),
    ("angles_changed", 1, _angles_changed),
    ("occupancy", 3, _occupancy),
    ("occupancy_ok", 1, _occupancy_ok),
    ("symbol", 3, _symbol),
    ("symbol_label_only", 1, _symbol_label_only),
    ("symbol_other", 1, _symbol_other),
    ("coordinate", 2, _coordinate),
    ("duplicate", 2, _duplicate),
    ("near_coincident", 3, _near_coincident),
    ("big_loop", 1.5, _big_loop),
    ("max_loop_ok", 0.2, _max_loop_ok),
    ("symmetry_explosion", 0.3, _symmetry_explosion),
    ("missing", 2, _missing),
    ("degenerate", 1, _degenerate),
    ("two_blocks", 1, _two_blocks),
    ("long_comment", 0.3, _long_comment),
    ("many_blocks", 0.3, _many_blocks),
    ("tabs", 0.5, _tabs),
    ("byte_flips", 5, _byte_flips),
    ("invalid_utf8", 3, _invalid_utf8),
    ("latin1_comment", 1.5, _latin1_comment),
    ("bom_crlf", 1, _bom_crlf),
    ("utf16", 0.5, _utf16),
    ("nul_bytes", 1, _nul_bytes),
    ("truncate", 3, _truncate),
    ("garbage", 1, _garbage),
]
SEMANTIC = {
    n
    for n, _, f in MUTATIONS
    if n
    not in ("byte_flips", "invalid_utf8", "latin1_comment", "bom_crlf", "utf16", "nul_bytes", "truncate", "garbage")
}


def mutate(rng: np.random.Generator, model: CifModel, semantic_only: bool = False) -> tuple[str, str | bytes, str]:
    """(mutation name, file data, label) of one weighted-random mutation of ``model``."""
    table = [t for t in MUTATIONS if not semantic_only or t[0] in SEMANTIC]
    w = np.array([t[1] for t in table], dtype=float)
    name, _, fn = table[int(rng.choice(len(table), p=w / w.sum()))]
    data, label = fn(rng, model)
    return name, data, label
