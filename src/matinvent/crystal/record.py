"""The crystal record and its lossless conversions to pymatgen, CIF and ASE ``Atoms``.

extxyz files are read and written by :mod:`matinvent.io.structure_files`.

A crystal is (Z, F, L): atomic numbers ``Z`` (N,), fractional coordinates ``F`` (N, 3) wrapped
to [0, 1), and the lattice ``L`` (3, 3) in Å with rows = lattice vectors, so that Cartesian
positions are ``F @ L``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matinvent.crystal.checks import (
    MAX_ATOMS,
    OCCUPANCY_TOL,
    check_atom_count,
    check_cif_block,
    check_lattice,
    cif_atom_rows,
    decode_text,
)

MAX_Z = 100


class CrystalError(ValueError):
    """A crystal, or the file it came from, is not usable; the message says why."""


class TooManyAtomsError(CrystalError):
    """The structure has more atoms than the reader's ``max_atoms``; refused before it was parsed."""


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
        """From a pymatgen ``Structure`` (ordered sites only; occupancies within ``OCCUPANCY_TOL`` of 1)."""
        Z = []
        for site in structure:
            species = site.species
            if len(species) != 1 or abs(species.num_atoms - 1) > OCCUPANCY_TOL:
                formula = structure.composition.reduced_formula
                raise CrystalError(f"disordered structure {formula}: partial occupancies")
            specie = next(iter(species))
            z = getattr(specie, "Z", None)
            if type(specie).__name__ == "DummySpecies" or not isinstance(z, int) or not 1 <= z <= MAX_Z:
                raise CrystalError(f"unknown element '{specie}'")
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
    def from_cif(cls, text: str, max_atoms: int | None = MAX_ATOMS) -> Crystal:
        """Parse CIF text (first structure); raises ``CrystalError`` naming the problem.

        The cheap checks of ``matinvent.crystal.checks`` (atom-site count ≤ ``max_atoms``, element
        symbols, occupancies, cell parameters) run on the tokenised text before pymatgen builds a
        structure; the lattice (``check_lattice``) and the atom count after symmetry expansion after.
        """
        from pymatgen.io.cif import CifFile, CifParser

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cif_blocks = list(CifFile.from_str(text).data.values())
        except Exception as exc:  # pymatgen raises many exception types on bad CIFs
            raise CrystalError(f"could not parse CIF: {exc}") from exc
        atom_blocks = [b for b in cif_blocks if cif_atom_rows(b.data)]  # none: pymatgen below says what is missing
        for i, block in enumerate(atom_blocks):  # every block: a multi-block file is refused if any is bad
            where = f"data block {i + 1}: " if len(atom_blocks) > 1 else ""
            if reason := check_atom_count(cif_atom_rows(block.data), max_atoms):
                raise TooManyAtomsError(where + reason)
            if reason := check_cif_block(block.data):
                raise CrystalError(where + reason)
        # the first block with atom sites is the structure (pymatgen would silently skip a bad one)
        source = str(_full_occupancy(atom_blocks[0])) if atom_blocks else text
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                structures = CifParser.from_str(source).parse_structures(primitive=False)
            except Exception as exc:  # pymatgen raises many exception types on bad CIFs
                why = next((str(w.message).replace("\n", " ") for w in caught if "No structure" in str(w.message)), "")
                raise CrystalError(f"could not parse CIF: {why or exc}") from exc
        if not structures:
            raise CrystalError("could not parse CIF: no structure found")
        structure = structures[0]
        if reason := check_atom_count(len(structure), max_atoms):
            raise TooManyAtomsError(f"{reason} after symmetry expansion")
        if reason := check_lattice(structure.lattice.matrix):
            raise CrystalError(reason)
        return cls.from_structure(_in_label_order(structure))

    def to_cif(self) -> str:
        """CIF text (P1, 10 significant figures: round trips to ~1e-9)."""
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(self.to_structure(), significant_figures=10))

    @classmethod
    def read_cif(cls, path: str | Path, max_atoms: int | None = MAX_ATOMS) -> Crystal:
        """``from_cif`` of a file, decoded leniently (invalid UTF-8 bytes replaced); errors name the path."""
        path = Path(path)
        try:
            text, replaced = decode_text(path.read_bytes())
        except OSError as exc:
            raise CrystalError(f"{path}: could not read: {exc}") from exc
        try:
            return cls.from_cif(text, max_atoms=max_atoms)
        except CrystalError as exc:
            note = " (file is not valid UTF-8; invalid bytes were replaced)" if replaced else ""
            raise type(exc)(f"{path}: {exc}{note}") from exc

    def write_cif(self, path: str | Path) -> None:
        Path(path).write_text(self.to_cif())

    # --- ASE / extxyz ---------------------------------------------------------------------
    @classmethod
    def from_atoms(cls, atoms, max_atoms: int | None = MAX_ATOMS) -> Crystal:
        """From an ASE ``Atoms`` with a full 3-D cell (atom count and cell checked first)."""
        if reason := check_atom_count(len(atoms), max_atoms):
            raise TooManyAtomsError(reason)
        L = np.asarray(atoms.cell, dtype=np.float64)
        if reason := check_lattice(L):
            raise CrystalError(reason)
        return cls(Z=atoms.numbers, F=atoms.get_scaled_positions(wrap=True), L=L)

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


def _full_occupancy(block):
    """``block`` with occupancies that ``check_cif_block`` accepted as full ("?", ".", 1 ± tol) set to "1".

    pymatgen reads "." as 0 (dropping the site) and refuses 1.0005 (> its occupancy tolerance).
    """
    key = next((k for k in block.data if k.lower() == "_atom_site_occupancy"), None)
    if key is not None:
        block.data[key] = ["1" for _ in block.data[key]]  # check_cif_block refused anything not full
    return block


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
