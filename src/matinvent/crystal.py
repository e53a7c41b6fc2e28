"""The crystal record and its lossless conversions to pymatgen, CIF and extxyz (ASE).

A crystal is (Z, F, L): atomic numbers ``Z`` (N,), fractional coordinates ``F`` (N, 3) wrapped
to [0, 1), and the lattice ``L`` (3, 3) in Å with rows = lattice vectors, so that Cartesian
positions are ``F @ L``.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_Z = 100


class CrystalError(ValueError):
    """A crystal, or the file it came from, is not usable; the message says why."""


@dataclass(frozen=True, eq=False)
class Crystal:
    """Z: (N,) atomic numbers; F: (N, 3) fractional in [0, 1); L: (3, 3) Å, rows = lattice vectors."""

    Z: np.ndarray
    F: np.ndarray
    L: np.ndarray

    def __post_init__(self) -> None:
        Z = np.asarray(self.Z)
        F = np.asarray(self.F, dtype=np.float64)
        L = np.asarray(self.L, dtype=np.float64)
        if Z.ndim != 1 or len(Z) == 0:
            raise CrystalError(f"Z must be a non-empty 1-D array of atomic numbers, got shape {Z.shape}")
        if not np.issubdtype(Z.dtype, np.integer):
            if not np.all(np.isfinite(Z)) or np.any(Z != np.round(Z)):
                raise CrystalError(f"Z must hold integer atomic numbers, got {Z.tolist()}")
        Z = Z.astype(np.int64)
        if np.any(Z < 1) or np.any(Z > MAX_Z):
            bad = sorted(set(Z[(Z < 1) | (Z > MAX_Z)].tolist()))
            raise CrystalError(f"unknown element: atomic numbers {bad} outside 1..{MAX_Z}")
        if F.shape != (len(Z), 3):
            raise CrystalError(f"F must have shape ({len(Z)}, 3) to match Z, got {F.shape}")
        if L.shape != (3, 3):
            raise CrystalError(f"L must have shape (3, 3), got {L.shape}")
        if not np.all(np.isfinite(F)):
            raise CrystalError("fractional coordinates contain NaN or inf")
        if not np.all(np.isfinite(L)):
            raise CrystalError("lattice contains NaN or inf")
        if abs(np.linalg.det(L)) < 1e-8:
            raise CrystalError(f"lattice is singular (volume {np.linalg.det(L):.3g} Å³)")
        F = F - np.floor(F)
        F[F >= 1.0] -= 1.0
        object.__setattr__(self, "Z", Z)
        object.__setattr__(self, "F", F)
        object.__setattr__(self, "L", L)

    @property
    def num_atoms(self) -> int:
        return len(self.Z)

    @property
    def volume(self) -> float:
        """Cell volume in Å³."""
        return float(abs(np.linalg.det(self.L)))

    @property
    def cart_coords(self) -> np.ndarray:
        """(N, 3) Cartesian positions in Å."""
        return self.F @ self.L

    # --- pymatgen -------------------------------------------------------------------------
    @classmethod
    def from_structure(cls, structure) -> Crystal:
        """From a pymatgen ``Structure`` (ordered sites only)."""
        if not structure.is_ordered:
            raise CrystalError(f"disordered structure {structure.composition.reduced_formula}: partial occupancies")
        Z = []
        for site in structure:
            z = getattr(site.specie, "Z", None)
            if type(site.specie).__name__ == "DummySpecies" or not isinstance(z, int) or not 1 <= z <= MAX_Z:
                raise CrystalError(f"unknown element '{site.specie}'")
            Z.append(z)
        Z = np.array(Z, dtype=np.int64)
        return cls(Z=Z, F=structure.frac_coords, L=structure.lattice.matrix)

    def to_structure(self):
        """To a pymatgen ``Structure`` with the same lattice matrix and fractional coordinates."""
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.L), self.Z.tolist(), self.F, coords_are_cartesian=False)

    @property
    def formula(self) -> str:
        """Reduced formula, e.g. ``SrTiO3``."""
        return self.to_structure().composition.reduced_formula

    # --- CIF ------------------------------------------------------------------------------
    @classmethod
    def from_cif(cls, text: str) -> Crystal:
        """Parse CIF text (first structure); raises ``CrystalError`` naming the problem."""
        from pymatgen.io.cif import CifParser

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parser = CifParser(io.StringIO(text))
                structures = parser.parse_structures(primitive=False)
        except Exception as exc:  # pymatgen raises many exception types on bad CIFs
            raise CrystalError(f"could not parse CIF: {exc}") from exc
        if not structures:
            raise CrystalError("could not parse CIF: no structure found")
        return cls.from_structure(_in_label_order(structures[0]))

    def to_cif(self) -> str:
        """CIF text (P1, 10 significant figures: round trips to ~1e-9)."""
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(self.to_structure(), significant_figures=10))

    @classmethod
    def read_cif(cls, path: str | Path) -> Crystal:
        path = Path(path)
        try:
            return cls.from_cif(path.read_text())
        except CrystalError as exc:
            raise CrystalError(f"{path}: {exc}") from exc

    def write_cif(self, path: str | Path) -> None:
        Path(path).write_text(self.to_cif())

    # --- ASE / extxyz ---------------------------------------------------------------------
    @classmethod
    def from_atoms(cls, atoms) -> Crystal:
        """From an ASE ``Atoms`` with a full 3-D cell."""
        return cls(Z=atoms.numbers, F=atoms.get_scaled_positions(wrap=True), L=np.asarray(atoms.cell))

    def to_atoms(self):
        from ase import Atoms

        return Atoms(numbers=self.Z, scaled_positions=self.F, cell=self.L, pbc=True)

    def allclose(self, other: Crystal, atol: float = 1e-6) -> bool:
        """Same species order, lattice and fractional coordinates (modulo 1) within ``atol``."""
        if self.num_atoms != other.num_atoms or not np.array_equal(self.Z, other.Z):
            return False
        dF = self.F - other.F
        dF -= np.round(dF)
        return bool(np.allclose(self.L, other.L, rtol=0.0, atol=atol) and np.all(np.abs(dF) <= atol))


def _in_label_order(structure):
    """Undo the CIF parser's grouping by species when labels carry site indices (``Fe0``, ``O1``, …).

    ``Crystal.to_cif`` (pymatgen's CifWriter) labels site i with its symbol followed by i, so
    sorting by that number restores the written atom order; other CIFs are left as parsed.
    """
    labels = [getattr(site, "label", None) or "" for site in structure]
    idx = []
    for label in labels:
        m = re.fullmatch(r"[A-Za-z]+(\d+)", label)
        if m is None:
            return structure
        idx.append(int(m.group(1)))
    if sorted(idx) != list(range(len(idx))):
        return structure
    from pymatgen.core import Structure

    order = np.argsort(idx)
    return Structure.from_sites([structure[i] for i in order])


def write_extxyz(crystals: list[Crystal], path: str | Path) -> None:
    """Write all crystals to one extended-XYZ file."""
    from ase.io import write

    write(str(path), [c.to_atoms() for c in crystals], format="extxyz")


def read_extxyz(path: str | Path) -> list[Crystal]:
    """Read every frame of an extended-XYZ file."""
    from ase.io import read

    try:
        frames = read(str(path), index=":", format="extxyz")
    except Exception as exc:
        raise CrystalError(f"{path}: could not read extxyz: {exc}") from exc
    return [Crystal.from_atoms(a) for a in frames]
