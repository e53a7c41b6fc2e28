"""Validity checks: which structures are worth an oracle call, and why the others are not.

- **physical validity** (the default gate): every periodic pair distance (minimum image; an atom
  and its own images count when the cell is tiny) d_ij ≥ ``F_COVALENT`` × (r_i + r_j) with the
  covalent radii of ``ase.data.covalent_radii`` (Cordero et al. 2008), and the density within
  ``DENSITY_WINDOW`` g/cm³;
- **CDVAE structure validity** (the older gate): every distance ≥ 0.5 Å and volume ≥ 0.1 Å³
  (self-images excluded, as CDVAE/DiffCSP do);
- **composition validity**: SMACT charge neutrality + electronegativity (pure metals pass).

Each check returns ``(ok, reason)``; ``reason`` is ``""`` when ``ok``. ``GATES`` names the
combinations the CLI and the RL loop offer (``validity:`` / ``--validity``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

# Chosen on MP-20 by ``python benchmarks/physical_validity.py`` (benchmarks/results/physical_validity.json):
# the per-crystal minimum of d_ij / (r_i + r_j) has its 0.5 % quantile at 0.737 (train_partial) and
# 0.738 (val); f = 0.7 (rounded down) passes 99.82 % of train_partial and 99.83 % of val. MP-20
# densities span 0.12 (solid H2) to 22.8 g/cm³ (Pu; Os, the densest element, is 22.6): the window
# is half the lightest and 10 % above the densest, rounded outwards; every MP-20 crystal is inside.
# All of physical_validity: 99.82 % of train_partial (15,837) and 99.83 % of val (9,047) pass; the failures
# are U, Ce, Np, Pu compounds and a few Cs/Rb, elements whose covalent radii are large.
F_COVALENT = 0.7
DENSITY_WINDOW = (0.05, 30.0)  # g/cm³
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660

CDVAE_MIN_DISTANCE = 0.5
CDVAE_MIN_VOLUME = 0.1
# SMACT enumerates oxidation-state combinations, exponential in the number of elements
# (45 s for a 12-element formula). MP-20 has no material with more than 7 distinct elements;
# compositions above this many elements are reported invalid without running SMACT.
MAX_SMACT_ELEMENTS = 8

GATES = ("physical", "physical+composition", "cdvae", "cdvae+composition", "none")
# names of earlier releases: "full" was the 0.5 Å check + SMACT, "structure" the 0.5 Å check alone;
# the physical check now takes the 0.5 Å check's place in both
GATE_ALIASES = {"full": "physical+composition", "structure": "physical"}


def _arrays(x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """(Z (N,), F (N, 3) fractional, L (3, 3) Å rows = lattice vectors) of a Crystal or Structure, or a reason."""
    if x is None:
        return "no structure (could not be read or built)"
    if hasattr(x, "lattice") and hasattr(x, "frac_coords"):  # pymatgen Structure
        if not x.is_ordered:
            return "disordered structure (partial occupancies)"
        Z = np.array([getattr(site.specie, "Z", 0) for site in x], dtype=np.int64)
        if np.any(Z < 1) or np.any(Z > 100):
            return "structure holds a dummy or unknown species"
        F, L = np.asarray(x.frac_coords, float), np.asarray(x.lattice.matrix, float)
    else:
        Z, F, L = np.asarray(x.Z, np.int64), np.asarray(x.F, float), np.asarray(x.L, float)
    if len(Z) == 0:
        return "no atoms"
    if not (np.all(np.isfinite(F)) and np.all(np.isfinite(L))):
        return "non-finite coordinates or lattice"
    if abs(np.linalg.det(L)) < 1e-8:
        return "singular lattice"
    return Z, F, L


def periodic_distances(F: np.ndarray, L: np.ndarray) -> np.ndarray:
    """(N, N) minimum-image distances in Å; the diagonal is each atom's distance to its nearest own image."""
    from pymatgen.core import Lattice

    lattice = Lattice(L)
    Lr = lattice.lll_matrix  # a reduced basis: the minimum image lies within ±2 cells of it
    Fr = lattice.get_lll_frac_coords(F)
    Fr = Fr - np.floor(Fr)
    grid = np.arange(-2, 3)
    shifts = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)  # (125, 3)
    cart = Fr @ Lr
    diff = cart[None, :, None, :] - cart[:, None, None, :] + (shifts @ Lr)[None, None]  # (N, N, 125, 3)
    d2 = np.einsum("ijkx,ijkx->ijk", diff, diff)
    n = len(F)
    d2[np.arange(n), np.arange(n), len(shifts) // 2] = np.inf  # an atom with itself (zero shift)
    return np.sqrt(d2.min(axis=2))


def density_gcm3(x: Any) -> float:
    """Mass density in g/cm³ (NaN when the structure is unusable)."""
    arrays = _arrays(x)
    if isinstance(arrays, str):
        return float("nan")
    Z, _, L = arrays
    return _density(Z, L)


def _density(Z: np.ndarray, L: np.ndarray) -> float:
    from ase.data import atomic_masses

    return float(atomic_masses[Z].sum() / abs(np.linalg.det(L)) * AMU_PER_A3_TO_G_PER_CM3)


def contact_ratio(x: Any) -> tuple[float, int, int, float]:
    """(min_ij d_ij / (r_i + r_j), i, j, d_ij in Å) over all periodic pairs, self-images included."""
    arrays = _arrays(x)
    if isinstance(arrays, str):
        raise ValueError(arrays)
    return _contact(*arrays)


def _contact(Z: np.ndarray, F: np.ndarray, L: np.ndarray) -> tuple[float, int, int, float]:
    from ase.data import covalent_radii

    d = periodic_distances(F, L)
    r = covalent_radii[Z]
    ratio = d / (r[:, None] + r[None, :])
    i, j = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
    return float(ratio[i, j]), int(i), int(j), float(d[i, j])


def physical_validity(x: Any, f: float = F_COVALENT, window: tuple[float, float] = DENSITY_WINDOW) -> tuple[bool, str]:
    """(ok, reason): all periodic pairs d_ij ≥ f × (r_cov,i + r_cov,j) and density in ``window`` g/cm³."""
    from ase.data import chemical_symbols, covalent_radii

    arrays = _arrays(x)
    if isinstance(arrays, str):
        return False, arrays
    Z, _, L = arrays
    ratio, i, j, d = _contact(*arrays)
    if ratio < f:
        ri, rj = covalent_radii[Z[i]], covalent_radii[Z[j]]
        pair = f"{chemical_symbols[Z[i]]}–{chemical_symbols[Z[j]]}" + (" (own image)" if i == j else "")
        return False, f"pair {pair} {d:.2f} Å < {f:g} × ({ri:.2f}+{rj:.2f}) Å"
    rho = _density(Z, L)
    if not window[0] <= rho <= window[1]:
        return False, f"density {rho:.1f} g/cm³ outside [{window[0]:g}, {window[1]:g}]"
    return True, ""


def physically_valid(x: Any) -> bool:
    """``physical_validity(x)[0]``."""
    return physical_validity(x)[0]


def cdvae_validity(
    x: Any, min_distance: float = CDVAE_MIN_DISTANCE, min_volume: float = CDVAE_MIN_VOLUME
) -> tuple[bool, str]:
    """(ok, reason): all distances ≥ ``min_distance`` Å (periodic, self-images excluded), volume ≥ ``min_volume`` Å³."""
    arrays = _arrays(x)
    if isinstance(arrays, str):
        return False, arrays
    Z, F, L = arrays
    volume = abs(np.linalg.det(L))
    if volume < min_volume:
        return False, f"volume {volume:.3g} Å³ < {min_volume:g} Å³"
    if len(Z) == 1:
        return True, ""
    d = periodic_distances(F, L)
    np.fill_diagonal(d, np.inf)
    if d.min() < min_distance:
        return False, f"distance {d.min():.2f} Å < {min_distance:g} Å"
    return True, ""


def structure_valid(x: Any, min_distance: float = CDVAE_MIN_DISTANCE, min_volume: float = CDVAE_MIN_VOLUME) -> bool:
    """CDVAE structure validity: ``cdvae_validity(x)[0]``."""
    return cdvae_validity(x, min_distance, min_volume)[0]


def composition_validity(x: Any) -> tuple[bool, str]:
    """(ok, reason): SMACT charge neutrality and Pauling electronegativity test (pure metals/alloys pass)."""
    if isinstance(_arrays(x), str):
        return False, "no composition"
    structure = x if hasattr(x, "composition") else x.to_structure()
    n_el = len(structure.composition.elements)
    if n_el > MAX_SMACT_ELEMENTS:
        return False, f"{n_el} elements > {MAX_SMACT_ELEMENTS} (SMACT not run)"
    from smact.screening import smact_validity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ok = bool(smact_validity(structure.composition))
        except Exception:  # noqa: BLE001 - smact lacks data for some elements
            ok = False
    return ok, "" if ok else f"composition {structure.composition.reduced_formula} fails SMACT charge balance"


def composition_valid(x: Any) -> bool:
    """``composition_validity(x)[0]``."""
    return composition_validity(x)[0]


def resolve_gate(name: str) -> str:
    """The canonical gate name (old names mapped); ``ValueError`` naming the choices otherwise."""
    gate = GATE_ALIASES.get(name, name)
    if gate not in GATES:
        raise ValueError(f"unknown validity '{name}' (choose from: {', '.join(GATES)}; old names: full, structure)")
    return gate


def gate_validity(x: Any, gate: str) -> tuple[bool, str]:
    """(ok, reason) of ``x`` under a gate of ``GATES`` (or an old name); ``none`` passes everything readable."""
    gate = resolve_gate(gate)
    if gate == "none":
        return (x is not None), "" if x is not None else "no structure (could not be read or built)"
    geometry = physical_validity if gate.startswith("physical") else cdvae_validity
    ok, reason = geometry(x)
    if ok and gate.endswith("+composition"):
        ok, reason = composition_validity(x)
    return ok, reason


def gate_flags(xs: list[Any], gate: str) -> tuple[np.ndarray, list[str]]:
    """Boolean (n,) flags and the reasons (``""`` where valid) of a list of structures."""
    results = [gate_validity(x, gate) for x in xs]
    return np.array([ok for ok, _ in results], dtype=bool), [reason for _, reason in results]
