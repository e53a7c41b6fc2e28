"""A stable identity for a crystal: the hash that keys caches of relaxations and oracle results."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

DECIMALS = 6  # lattice (Å) and fractional coordinates are rounded to 1e-6 before hashing


def structure_key(structure: Any) -> str:
    """SHA-1 hex digest of a pymatgen ``Structure``'s lattice matrix (Å), wrapped fractional coordinates and
    species, in site order, each number rounded to ``DECIMALS`` places.

    The same crystal read back from its CIF or JSON gets the same key; a relaxed cell gets another.
    """
    frac = np.round(np.mod(structure.frac_coords, 1.0), DECIMALS) % 1.0 + 0.0  # + 0.0: -0.0 hashes as 0.0
    lattice = np.round(structure.lattice.matrix, DECIMALS) + 0.0
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(lattice, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(frac, dtype=np.float64).tobytes())
    h.update("|".join(site.species_string for site in structure).encode())
    return h.hexdigest()
