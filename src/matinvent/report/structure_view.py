"""A crystal's unit cell as an interactive 3-D figure (plotly ``scatter3d``) and its symmetry for a report.

:func:`structure_figure` draws the atoms of one unit cell in Cartesian Å (one trace per element,
Jmol colours and covalent radii from ASE, atoms on a cell face, edge or corner repeated on the
opposite ones) and the 12 cell edges. :func:`symmetry` finds the space group with pymatgen's
``SpacegroupAnalyzer`` and writes the symmetrised CIF with ``CifWriter(symprec=…)``; when
symmetry detection fails it says why and gives no CIF (the P1 one stands).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from ase.data import covalent_radii
from ase.data.colors import jmol_colors
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

FACE_TOL = 1e-3  # fractional distance from a cell face below which an atom is repeated on the opposite face
_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)), dtype=float)  # (8, 3) fractional
_EDGES = [(i, j) for i, j in itertools.combinations(range(8), 2) if np.abs(_CORNERS[i] - _CORNERS[j]).sum() == 1]


@dataclass(frozen=True)
class Symmetry:
    """Space group of a structure at ``symprec`` (Å) and its symmetrised CIF (``None`` when detection failed)."""

    symbol: str
    number: int | None
    cif: str | None
    note: str = ""

    @property
    def label(self) -> str:
        """``"Fm-3m (225)"``, or ``"?"`` when unknown."""
        return f"{self.symbol} ({self.number})" if self.number else "?"


def symmetry(structure: Structure, symprec: float = 0.1) -> Symmetry:
    """Space group (Hermann–Mauguin symbol, number) and symmetrised CIF of ``structure`` at ``symprec`` Å."""
    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        symbol, number = sga.get_space_group_symbol(), int(sga.get_space_group_number())
        cif = str(CifWriter(structure, symprec=symprec))
    except Exception as exc:  # noqa: BLE001 - spglib/pymatgen raise several types; the report must go on
        return Symmetry("?", None, None, f"symmetry detection failed at symprec {symprec:g} Å ({exc}); P1 CIF only")
    return Symmetry(symbol, number, cif)


def cell_images(frac: np.ndarray, tol: float = FACE_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coordinates wrapped into [0, 1) plus the periodic images of atoms on faces/edges/corners.

    ``frac``: (N, 3). Returns ``(coords (M, 3), site index (M,))`` with M ≥ N; the first N rows are the sites.
    """
    f = np.asarray(frac, dtype=float) % 1.0
    f[np.isclose(f, 1.0, atol=tol)] = 0.0
    coords, owner = [f], [np.arange(len(f))]
    for shift in _CORNERS[1:]:  # (0/1, 0/1, 0/1) except the origin
        on_face = np.all((f < tol) | (shift == 0), axis=1)
        coords.append(f[on_face] + shift)
        owner.append(np.nonzero(on_face)[0])
    return np.concatenate(coords), np.concatenate(owner)


def _rgb(z: int) -> str:
    r, g, b = (int(round(255 * c)) for c in jmol_colors[z])
    return f"rgb({r},{g},{b})"


def structure_figure(structure: Structure, title: str = "", height: int = 320) -> go.Figure:
    """The unit cell of ``structure``: atoms (marker size ∝ covalent radius) and cell edges, axes in Å."""
    lattice = structure.lattice.matrix  # (3, 3) Å, rows = lattice vectors
    frac, owner = cell_images(structure.frac_coords)
    cart = frac @ lattice
    species = [structure[int(i)].specie for i in owner]
    corners = _CORNERS @ lattice
    edges = np.full((3 * len(_EDGES), 3), np.nan)  # NaN rows break the line between edges
    for k, (i, j) in enumerate(_EDGES):
        edges[3 * k], edges[3 * k + 1] = corners[i], corners[j]
    traces: list[dict] = [
        {"type": "scatter3d", "x": edges[:, 0], "y": edges[:, 1], "z": edges[:, 2], "mode": "lines",
         "line": {"color": "#444", "width": 3}, "hoverinfo": "skip", "name": "cell", "showlegend": False}
    ]  # fmt: skip
    for el in sorted({s.symbol for s in species}, key=lambda e: structure.composition.get(e, 0), reverse=True):
        idx = [k for k, s in enumerate(species) if s.symbol == el]
        z = species[idx[0]].Z
        hover = [
            f"{el} (site {owner[k]})<br>frac ({frac[k, 0]:.3f}, {frac[k, 1]:.3f}, {frac[k, 2]:.3f})"
            f"<br>cart ({cart[k, 0]:.2f}, {cart[k, 1]:.2f}, {cart[k, 2]:.2f}) Å"
            for k in idx
        ]
        marker = {"size": 6 + 10 * float(covalent_radii[z]), "color": _rgb(z), "line": {"color": "#222", "width": 1}}
        traces.append(
            {"type": "scatter3d", "x": cart[idx, 0], "y": cart[idx, 1], "z": cart[idx, 2], "mode": "markers",
             "name": el, "text": hover, "hoverinfo": "text", "marker": marker}
        )  # fmt: skip
    axis = {"showbackground": False, "showgrid": False, "zeroline": False, "nticks": 4, "tickfont": {"size": 9}}
    layout = {
        "template": "none",
        "title": {"text": title, "font": {"size": 13}},
        "height": height,
        "margin": {"l": 0, "r": 0, "t": 30 if title else 0, "b": 0},
        "legend": {"x": 0.0, "y": 1.0, "bgcolor": "rgba(255,255,255,0.6)", "font": {"size": 10}},
        "scene": {
            "aspectmode": "data",
            "camera": {"eye": {"x": 1.6, "y": 1.6, "z": 1.1}},
            "xaxis": {**axis, "title": {"text": "x (Å)"}},
            "yaxis": {**axis, "title": {"text": "y (Å)"}},
            "zaxis": {**axis, "title": {"text": "z (Å)"}},
        },
    }
    return go.Figure(data=traces, layout=layout)
