"""Elastic properties of an MLIP-relaxed structure: EOS bulk modulus and the finite-strain elastic tensor.

- Bulk modulus (GPa): ASE ``EquationOfState`` (Birch–Murnaghan) fit of E(V) over
  ``eos_points`` isotropically scaled copies of the relaxed cell spanning ±``eos_volume_range``,
  the ions relaxed at each volume for ``inner_steps`` steps.
- Elastic tensor (6×6 Voigt, GPa, order xx yy zz yz xz xy, engineering shear strain): each
  Voigt strain component ε_j ∈ ±strain (and ±strain/2 with 4 points) is applied on its own
  (F = I + ε, symmetric), the ions relaxed at fixed cell, and the stresses fitted by pymatgen
  ``ElasticTensor.from_independent_strains``: C_ij = dσ_i/dε_j, the slope of a straight line
  through the strained states and the unstrained one (whose residual stress cancels from the
  slope, the strains being symmetric about 0).
- VRH moduli: pymatgen ``ElasticTensor.k_vrh`` / ``g_vrh`` of that tensor.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Protocol

import numpy as np


class StrainRelaxer(Protocol):
    """What the E(V) scan and the strain fit need of a relaxer
    (:class:`~matinvent.oracles.mlip.relax.MLIPRelaxer` is one)."""

    eos_volume_range: float
    eos_points: int
    inner_steps: int
    strain: float
    strain_points: int

    def atoms(self, structure: Any) -> Any: ...

    def run_optimizer(self, atoms: Any, steps: int, cell: bool) -> tuple[int, bool]: ...


VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))  # Voigt index -> tensor indices


def _gpa() -> float:
    from ase.units import GPa

    return float(GPa)  # eV/Å³ per GPa


def voigt_strain(j: int, delta: float) -> np.ndarray:
    """Symmetric 3×3 strain tensor of Voigt component ``j`` (0..5) with engineering size ``delta``."""
    a, b = VOIGT_PAIRS[j]
    eps = np.zeros((3, 3))
    eps[a, b] = eps[b, a] = delta if a == b else delta / 2
    return eps


def eos_bulk_modulus(relaxer: StrainRelaxer, structure: Any) -> float:
    """Birch–Murnaghan bulk modulus (GPa) of a relaxed structure with ``relaxer``'s calculator and settings.

    Raises:
        ValueError: the fit gives a non-finite or non-positive modulus.
    """
    from ase.eos import EquationOfState

    atoms = relaxer.atoms(structure)
    cell0 = np.array(atoms.cell)
    volumes, energies = [], []
    for f in np.linspace(1 - relaxer.eos_volume_range, 1 + relaxer.eos_volume_range, relaxer.eos_points):
        atoms.set_cell(cell0 * f ** (1 / 3), scale_atoms=True)
        if relaxer.inner_steps > 0:
            relaxer.run_optimizer(atoms, relaxer.inner_steps, cell=False)
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    b_gpa = float(b) / _gpa()
    if not (math.isfinite(b_gpa) and b_gpa > 0):
        raise ValueError(f"unphysical EOS fit (B = {b_gpa:.3g} GPa)")
    return b_gpa


def elastic_tensor(relaxer: StrainRelaxer, structure: Any) -> np.ndarray:
    """6×6 Voigt stiffness (GPa) of a relaxed structure from independent finite strains, relaxed ions.

    Raises:
        ValueError: a non-finite stress.
    """
    from pymatgen.analysis.elasticity import ElasticTensor, Strain, Stress

    atoms = relaxer.atoms(structure)
    cell0 = np.array(atoms.cell)
    pos0 = atoms.get_positions()
    deltas = np.array([-1.0, -0.5, 0.5, 1.0] if relaxer.strain_points == 4 else [-1.0, 1.0]) * relaxer.strain
    strains, stresses = [], []
    for j in range(6):
        for d in deltas:
            eps = voigt_strain(j, d)
            deform = np.eye(3) + eps
            atoms.set_cell(cell0 @ deform, scale_atoms=False)
            atoms.set_positions(pos0 @ deform)
            if relaxer.inner_steps > 0:
                relaxer.run_optimizer(atoms, relaxer.inner_steps, cell=False)
            strains.append(Strain(eps))
            stresses.append(Stress(atoms.get_stress(voigt=False) / _gpa()))  # ASE sign: tension > 0
    if not all(np.all(np.isfinite(s)) for s in stresses):
        raise ValueError("non-finite stress in the elastic-tensor strains")
    # pymatgen's c[i, j] = dσ_j/dε_i; transposed to the usual C_ij = dσ_i/dε_j
    fit = ElasticTensor.from_independent_strains(strains, stresses, eq_stress=Stress(np.zeros((3, 3))))
    return np.asarray(fit.voigt, dtype=np.float64).T.copy()


def vrh_moduli(c: np.ndarray) -> tuple[float, float]:
    """Voigt–Reuss–Hill bulk and shear moduli (units of ``c``) of a 6×6 Voigt stiffness, symmetrised first."""
    from pymatgen.analysis.elasticity import ElasticTensor

    c = np.asarray(c, dtype=np.float64)
    if c.shape != (6, 6) or not np.all(np.isfinite(c)):
        raise ValueError(f"expected a finite 6×6 Voigt stiffness matrix, got shape {c.shape}")
    tensor = ElasticTensor.from_voigt(0.5 * (c + c.T))
    return float(tensor.k_vrh), float(tensor.g_vrh)
