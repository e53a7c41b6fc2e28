"""Physics oracles from a universal machine-learned interatomic potential (SevenNet-0 or CHGNet).

Every structure is relaxed once (ASE, ``FrechetCellFilter`` + FIRE/BFGS) by a shared
:class:`MLIPRelaxer` that caches the result by structure; the oracles then read off

- ``energy_per_atom`` (eV/atom): the model's energy of the relaxed structure (raw model output);
- ``formation_energy`` (eV/atom): ``(E − Σ n_el·μ_el) / N`` on the MP2020-corrected energy scale;
- ``bulk_modulus`` (GPa): Birch–Murnaghan fit of E(V) over isotropically scaled relaxed cells;
- ``shear_modulus`` (GPa): Voigt–Reuss–Hill G from a finite-strain elastic tensor (relaxed ions).

Energy scale. Both models are trained on MPtrj (PBE / PBE+U, the U set of ``MPRelaxSet`` for
oxides and fluorides of V, Cr, Mn, Fe, Co, Ni, Mo, W). SevenNet-0 predicts the raw VASP energy,
so its total energy is put through ``MaterialsProject2020Compatibility`` as a
``ComputedStructureEntry`` whose parameters say what MP would have run: ``run_type`` GGA+U with
the ``MPRelaxSet`` U values when the most electronegative element is O or F and a U metal is
present, GGA otherwise (POTCAR check off, since there is no VASP run). That adds the anion
(oxide / peroxide / superoxide from O–O distances, S, F, Cl, N, H, …) and GGA/GGA+U mixing
corrections. CHGNet is trained on the MP2020-corrected energies, so its energy is used as is.
The elemental references μ are the raw GGA energies per atom of the MP elemental ground states
that pymatgen ships with its MP2020 fitting data (``calc_compounds.json.gz``, 89 elements);
MP2020 applies no correction to pure elements, so they serve both models.

Left-handed cells (det L < 0) are replaced by the same crystal with all three lattice vectors
negated before anything is computed (CHGNet returns a wrong-signed stress otherwise). A
structure that cannot be handled (atoms closer than ``min_distance``, an element the model
does not know, a non-finite energy, …) gets a :class:`Relaxed` with ``structure=None`` and NaN
energy, and NaN from every oracle; the rest of the batch carries on.

Needs the ``mlip`` extra: ``pip install 'matinvent[mlip]'`` (sevenn, chgnet; weights ship in
their wheels, nothing is downloaded).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from matinvent.oracles.base import Oracle, StructureLike, as_structures

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'matinvent[mlip]'"
EV_PER_A3_TO_GPA = 160.21766208

# name -> (python package, pretrained name for the package, energies need the MP2020 correction)
MODELS: dict[str, tuple[str, str, bool]] = {
    "sevennet-0": ("sevenn", "7net-0", True),
    "7net-0": ("sevenn", "7net-0", True),
    "sevennet-l3i5": ("sevenn", "7net-l3i5", True),
    "7net-l3i5": ("sevenn", "7net-l3i5", True),
    "chgnet": ("chgnet", "0.3.0", False),
}


def _require(package: str, what: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"{what} needs the '{package}' package: install the MLIP extra with {EXTRA_HINT}")


def load_calculator(model: str = "sevennet-0", device: str = "cpu") -> Any:
    """The ASE calculator of a pretrained MLIP (weights from the installed wheel, no download)."""
    key = model.lower()
    if key not in MODELS:
        raise ValueError(f"unknown MLIP model {model!r}; choose one of {sorted(MODELS)}")
    package, name, _ = MODELS[key]
    _require(package, f"MLIP model {model!r}")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if package == "sevenn":
            from sevenn.calculator import SevenNetCalculator

            return SevenNetCalculator(name, device=device)
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(CHGNet.load(model_name=name, verbose=False, use_device=device), use_device=device)


# ----------------------------------------------------------------------------- energy references


@lru_cache(maxsize=1)
def mp_elemental_references() -> dict[str, float]:
    """Element symbol -> raw GGA energy per atom (eV/atom) of its MP ground state, as shipped in pymatgen."""
    for module in ("pymatgen.analysis.compatibility", "pymatgen.entries"):
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            continue
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent / "calc_compounds.json.gz"
        if path.exists():
            break
    else:
        raise FileNotFoundError("pymatgen's MP2020 fitting data (calc_compounds.json.gz) was not found")
    with gzip.open(path, "rt") as fh:
        entries = json.load(fh)
    refs: dict[str, float] = {}
    for entry in entries.values():
        comp = {el: n for el, n in entry["composition"].items() if n > 0}
        if len(comp) == 1:
            ((el, n),) = comp.items()
            refs[el] = min(refs.get(el, math.inf), entry["energy"] / n)
    return refs


@lru_cache(maxsize=1)
def _mp2020() -> Any:
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    return MaterialsProject2020Compatibility(check_potcar=False)


def mp_run_parameters(composition: Any) -> dict[str, Any]:
    """What MP would have run for this composition: GGA, or GGA+U with the ``MPRelaxSet`` U values (eV)."""
    from pymatgen.io.vasp.sets import MPRelaxSet

    elements = [el for el in composition.elements if composition[el] > 0]
    anion = max(elements, key=lambda el: el.X).symbol
    u_table = MPRelaxSet.CONFIG["INCAR"]["LDAUU"].get(anion, {})
    hubbards = {el.symbol: float(u_table[el.symbol]) for el in elements if u_table.get(el.symbol, 0)}
    return {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards}


def mp2020_corrected_energy(structure: Any, energy: float) -> float:
    """Total energy (eV) with the MP2020 anion and GGA/GGA+U mixing corrections added."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    entry = ComputedStructureEntry(structure, energy, parameters=mp_run_parameters(structure.composition))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processed = _mp2020().process_entry(entry, clean=True, inplace=False)
    if processed is None:
        raise ValueError(f"MP2020 correction is not defined for {structure.composition.reduced_formula}")
    return float(processed.energy)


def formation_energy_per_atom(structure: Any, energy: float) -> float:
    """``(E − Σ n_el·μ_el) / N`` in eV/atom; ``energy`` (eV, total) must be on the MP2020-corrected scale."""
    refs = mp_elemental_references()
    comp = structure.composition
    missing = [el.symbol for el in comp.elements if el.symbol not in refs]
    if missing:
        raise ValueError(f"no MP elemental reference energy for {missing}")
    reference = sum(n * refs[el.symbol] for el, n in comp.items())
    return (energy - reference) / comp.num_atoms


# ----------------------------------------------------------------------------- structures


def right_handed(structure: Any) -> Any:
    """The same crystal on a right-handed cell: a left-handed lattice has all three vectors negated."""
    from pymatgen.core import Lattice, Structure

    matrix = structure.lattice.matrix
    if np.linalg.det(matrix) >= 0:
        return structure
    return Structure(
        Lattice(-matrix),
        [site.species for site in structure],
        -structure.frac_coords,  # same Cartesian positions: (−f)·(−L) = f·L
        site_properties=structure.site_properties or None,
    )


def structure_key(structure: Any) -> str:
    """Cache key: a hash of the lattice (Å), species and wrapped fractional coordinates (rounded to 1e-6)."""
    frac = np.round(np.mod(structure.frac_coords, 1.0), 6) % 1.0
    h = hashlib.sha1()
    h.update(np.round(structure.lattice.matrix, 6).astype(np.float64).tobytes())
    h.update(np.ascontiguousarray(frac, dtype=np.float64).tobytes())
    h.update("|".join(site.species_string for site in structure).encode())
    return h.hexdigest()


@dataclass
class Relaxed:
    """One relaxation: the relaxed structure (None on failure), its energy (eV/atom, NaN on failure), status.

    ``properties`` caches what was derived from it (``formation_energy`` eV/atom, ``bulk_modulus``
    and ``shear_modulus`` GPa, ``elastic_tensor`` 6×6 GPa) so each is computed once.
    """

    structure: Any
    energy_per_atom: float
    converged: bool
    steps: int
    error: str | None = None
    properties: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.structure is not None and math.isfinite(self.energy_per_atom)


def _voigt_strain(j: int, delta: float) -> np.ndarray:
    """Symmetric strain tensor for Voigt component j (0..5, xx yy zz yz xz xy) of engineering size delta."""
    eps = np.zeros((3, 3))
    if j < 3:
        eps[j, j] = delta
    else:
        a, b = {3: (1, 2), 4: (0, 2), 5: (0, 1)}[j]
        eps[a, b] = eps[b, a] = delta / 2
    return eps


def vrh_moduli(c: np.ndarray) -> tuple[float, float]:
    """Voigt–Reuss–Hill bulk and shear moduli of a 6×6 Voigt stiffness matrix (same units as ``c``)."""
    c = 0.5 * (c + c.T)
    s = np.linalg.inv(c)
    c_a, c_b, c_c = np.trace(c[:3, :3]), c[0, 1] + c[1, 2] + c[0, 2], np.trace(c[3:, 3:])
    s_a, s_b, s_c = np.trace(s[:3, :3]), s[0, 1] + s[1, 2] + s[0, 2], np.trace(s[3:, 3:])
    k_v, g_v = (c_a + 2 * c_b) / 9, (c_a - c_b + 3 * c_c) / 15
    k_r, g_r = 1 / (s_a + 2 * s_b), 15 / (4 * s_a - 4 * s_b + 3 * s_c)
    return float((k_v + k_r) / 2), float((g_v + g_r) / 2)


# ----------------------------------------------------------------------------- the relaxer


class MLIPRelaxer:
    """Relaxes structures with an MLIP and caches the result (and derived properties) per structure.

    Args:
        model: ``"sevennet-0"`` (alias ``"7net-0"``), ``"sevennet-l3i5"`` or ``"chgnet"``.
        optimizer: ``"FIRE"`` or ``"BFGS"`` (ASE).
        fmax: force convergence threshold, eV/Å (cell DOFs via ``FrechetCellFilter``).
        max_steps: optimizer step limit for the full relaxation.
        relax_cell: relax the cell as well as the positions.
        device: torch device of the model.
        eos_volume_range: relative volume span of the E(V) scan (0.05 = ±5 %).
        eos_points: number of volumes in the E(V) scan.
        strain: largest finite strain of the elastic-tensor fit.
        strain_points: strains per Voigt component, 4 (±strain, ±strain/2, fitted slope) or 2 (±strain).
        inner_steps: position-relaxation steps at fixed cell in the E(V) and strain calculations (0 = clamped ions).
        min_distance: structures with two atoms closer than this (Å) fail without calling the model.
        calculator: an ASE calculator to use instead of loading ``model``; ``model`` still names its
            energy scale (a name not in :data:`MODELS` counts as already MP2020-corrected).
        mp2020_correction: apply the MP2020 correction to the model energy for formation energies
            (default: True for SevenNet models, False for CHGNet and unknown names).
    """

    def __init__(
        self,
        model: str = "sevennet-0",
        optimizer: str = "FIRE",
        fmax: float = 0.05,
        max_steps: int = 200,
        relax_cell: bool = True,
        device: str = "cpu",
        eos_volume_range: float = 0.05,
        eos_points: int = 7,
        strain: float = 0.01,
        strain_points: int = 4,
        inner_steps: int = 50,
        min_distance: float = 0.5,
        calculator: Any = None,
        mp2020_correction: bool | None = None,
    ) -> None:
        if optimizer.upper() not in ("FIRE", "BFGS"):
            raise ValueError(f"optimizer must be 'FIRE' or 'BFGS', got {optimizer!r}")
        key = model.lower()
        if calculator is None:
            if key not in MODELS:
                raise ValueError(f"unknown MLIP model {model!r}; choose one of {sorted(MODELS)}")
            _require(MODELS[key][0], f"MLIP model {model!r}")
        default_correction = MODELS[key][2] if key in MODELS else False
        self.model = model
        self.optimizer = optimizer.upper()
        self.fmax = float(fmax)
        self.max_steps = int(max_steps)
        self.relax_cell = bool(relax_cell)
        self.device = device
        self.eos_volume_range = float(eos_volume_range)
        self.eos_points = int(eos_points)
        if strain_points not in (2, 4):
            raise ValueError(f"strain_points must be 2 or 4, got {strain_points}")
        self.strain = float(strain)
        self.strain_points = int(strain_points)
        self.inner_steps = int(inner_steps)
        self.min_distance = float(min_distance)
        self.mp2020_correction = default_correction if mp2020_correction is None else bool(mp2020_correction)
        self._calculator = calculator
        self._cache: dict[str, Relaxed] = {}
        self.n_relaxations = 0  # relaxations actually run (cache misses)

    @property
    def calculator(self) -> Any:
        """The ASE calculator, loaded on first use."""
        if self._calculator is None:
            self._calculator = load_calculator(self.model, self.device)
        return self._calculator

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- relaxation

    def relax(self, structures: Sequence[StructureLike]) -> list[Relaxed]:
        """One :class:`Relaxed` per structure (pymatgen ``Structure`` or ``Crystal``), cached by structure."""
        out = []
        for s in as_structures(list(structures)):
            if s is None:
                out.append(Relaxed(None, math.nan, False, 0, "structure could not be built"))
                continue
            try:
                key = structure_key(s)
            except Exception as exc:  # noqa: BLE001
                out.append(Relaxed(None, math.nan, False, 0, f"{type(exc).__name__}: {exc}"))
                continue
            if key not in self._cache:
                self._cache[key] = self._relax_one(s)
            out.append(self._cache[key])
        return out

    def relaxed(self, structure: StructureLike) -> Relaxed:
        """The (cached) relaxation of one structure."""
        return self.relax([structure])[0]

    def _relax_one(self, structure: Any) -> Relaxed:
        self.n_relaxations += 1
        try:
            s = self._checked(structure)
            atoms = self._atoms(s)
            steps, converged = self._optimize(atoms, self.max_steps, cell=self.relax_cell)
            energy = float(atoms.get_potential_energy()) / len(atoms)
            if not math.isfinite(energy):
                raise ValueError("non-finite energy")
            return Relaxed(self._to_structure(atoms, s), energy, converged, steps)
        except Exception as exc:  # noqa: BLE001 - one failure never stops the batch
            formula = getattr(getattr(structure, "composition", None), "reduced_formula", "?")
            log.warning("MLIP relaxation of %s failed: %s: %s", formula, type(exc).__name__, exc)
            return Relaxed(None, math.nan, False, 0, f"{type(exc).__name__}: {exc}")

    def _checked(self, structure: Any) -> Any:
        if not structure.is_ordered:
            raise ValueError("disordered structure (partial occupancies)")
        matrix = structure.lattice.matrix
        if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(structure.frac_coords))):
            raise ValueError("non-finite lattice or coordinates")
        if abs(np.linalg.det(matrix)) < 1e-6:
            raise ValueError("singular lattice")
        s = right_handed(structure)
        _, _, _, dists = s.get_neighbor_list(self.min_distance)
        if len(dists):
            raise ValueError(f"atoms closer than {self.min_distance} Å (min {float(np.min(dists)):.3g} Å)")
        return s

    def _atoms(self, structure: Any) -> Any:
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = self.calculator
        return atoms

    @staticmethod
    def _to_structure(atoms: Any, like: Any) -> Any:
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(np.array(atoms.cell)), like.species, atoms.get_scaled_positions(wrap=True))

    def _optimize(self, atoms: Any, steps: int, cell: bool) -> tuple[int, bool]:
        """Run the optimizer in place; (steps taken, converged)."""
        from ase.optimize import BFGS, FIRE

        target = atoms
        if cell:
            try:
                from ase.filters import FrechetCellFilter as CellFilter
            except ImportError:  # ase < 3.23
                from ase.constraints import ExpCellFilter as CellFilter
            target = CellFilter(atoms)
        opt = (FIRE if self.optimizer == "FIRE" else BFGS)(target, logfile=None)
        converged = bool(opt.run(fmax=self.fmax, steps=steps))
        return int(opt.nsteps), converged

    # -- properties

    def _property(self, structures: Sequence[StructureLike], name: str, compute: Any) -> np.ndarray:
        out = np.full(len(structures), np.nan)
        for i, r in enumerate(self.relax(structures)):
            if not r.ok:
                continue
            if name not in r.properties:
                try:
                    r.properties[name] = float(compute(r))
                except Exception as exc:  # noqa: BLE001
                    log.warning("MLIP %s of %s failed: %s", name, r.structure.composition.reduced_formula, exc)
                    r.properties[name] = math.nan
            value = r.properties[name]
            out[i] = value if math.isfinite(value) else np.nan
        return out

    def energy_per_atom(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """Model energy of the relaxed structures, eV/atom (raw model scale)."""
        return np.array([r.energy_per_atom for r in self.relax(structures)], dtype=np.float64)

    def formation_energy(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """Formation energy of the relaxed structures vs the MP elemental references, eV/atom."""

        def compute(r: Relaxed) -> float:
            energy = r.energy_per_atom * len(r.structure)
            if self.mp2020_correction:
                energy = mp2020_corrected_energy(r.structure, energy)
            return formation_energy_per_atom(r.structure, energy)

        return self._property(structures, "formation_energy", compute)

    def bulk_modulus(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """Birch–Murnaghan bulk modulus of the relaxed structures, GPa."""
        return self._property(structures, "bulk_modulus", self._eos_bulk_modulus)

    def shear_modulus(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """VRH shear modulus from the finite-strain elastic tensor of the relaxed structures, GPa."""

        def compute(r: Relaxed) -> float:
            c = self.elastic_tensor(r)
            return vrh_moduli(c)[1]

        return self._property(structures, "shear_modulus", compute)

    def _eos_bulk_modulus(self, r: Relaxed) -> float:
        from ase.eos import EquationOfState

        atoms = self._atoms(r.structure)
        cell0 = np.array(atoms.cell)
        volumes, energies = [], []
        for f in np.linspace(1 - self.eos_volume_range, 1 + self.eos_volume_range, self.eos_points):
            atoms.set_cell(cell0 * f ** (1 / 3), scale_atoms=True)
            if self.inner_steps > 0:
                self._optimize(atoms, self.inner_steps, cell=False)
            volumes.append(atoms.get_volume())
            energies.append(atoms.get_potential_energy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
        b_gpa = float(b) * EV_PER_A3_TO_GPA
        if not (math.isfinite(b_gpa) and b_gpa > 0):
            raise ValueError(f"unphysical EOS fit (B = {b_gpa:.3g} GPa)")
        return b_gpa

    def elastic_tensor(self, relaxed: Relaxed) -> np.ndarray:
        """6×6 Voigt stiffness (GPa): slope of stress vs finite strain per component, relaxed ions; cached."""
        if "elastic_tensor" in relaxed.properties:
            return relaxed.properties["elastic_tensor"]
        atoms = self._atoms(relaxed.structure)
        cell0 = np.array(atoms.cell)
        pos0 = atoms.get_positions()
        deltas = np.array([-1.0, -0.5, 0.5, 1.0] if self.strain_points == 4 else [-1.0, 1.0]) * self.strain
        c = np.zeros((6, 6))
        for j in range(6):
            stresses = []
            for d in deltas:
                deform = np.eye(3) + _voigt_strain(j, d)
                atoms.set_cell(cell0 @ deform, scale_atoms=False)
                atoms.set_positions(pos0 @ deform)
                if self.inner_steps > 0:
                    self._optimize(atoms, self.inner_steps, cell=False)
                stresses.append(atoms.get_stress(voigt=True))  # eV/Å³, xx yy zz yz xz xy
            c[:, j] = np.polyfit(deltas, np.array(stresses), 1)[0] * EV_PER_A3_TO_GPA
        if not np.all(np.isfinite(c)):
            raise ValueError("non-finite elastic tensor")
        relaxed.properties["elastic_tensor"] = c
        return c


# ----------------------------------------------------------------------------- oracles


class _MLIPOracle(Oracle):
    """An oracle reading one property off a (possibly shared) :class:`MLIPRelaxer`."""

    _method: str = ""

    def __init__(self, relaxer: MLIPRelaxer | None = None, model: str = "sevennet-0", **relax_kwargs: Any) -> None:
        self.relaxer = relaxer if relaxer is not None else MLIPRelaxer(model=model, **relax_kwargs)

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return getattr(self.relaxer, self._method)(structures)


class MLIPEnergy(_MLIPOracle):
    """Energy per atom of the MLIP-relaxed structure, eV/atom (raw model scale)."""

    name = "energy_per_atom"
    unit = "eV/atom"
    description = "energy per atom after MLIP relaxation (SevenNet-0 / CHGNet)"
    _method = "energy_per_atom"


class MLIPFormationEnergy(_MLIPOracle):
    """Formation energy per atom of the MLIP-relaxed structure vs MP elemental references, eV/atom."""

    name = "formation_energy"
    unit = "eV/atom"
    description = "formation energy per atom after MLIP relaxation, MP2020 energy scale"
    _method = "formation_energy"


class MLIPBulkModulus(_MLIPOracle):
    """Bulk modulus of the MLIP-relaxed structure from a Birch–Murnaghan E(V) fit, GPa."""

    name = "bulk_modulus"
    unit = "GPa"
    description = "Birch-Murnaghan bulk modulus of the MLIP-relaxed structure"
    _method = "bulk_modulus"


class MLIPShearModulus(_MLIPOracle):
    """VRH shear modulus of the MLIP-relaxed structure from a finite-strain elastic tensor, GPa."""

    name = "shear_modulus"
    unit = "GPa"
    description = "Voigt-Reuss-Hill shear modulus from the MLIP finite-strain elastic tensor"
    _method = "shear_modulus"


def mlip_oracles(model: str = "sevennet-0", **relax_kwargs: Any) -> dict[str, Oracle]:
    """The four MLIP oracles by name, sharing one :class:`MLIPRelaxer` (also at ``oracle.relaxer``)."""
    relaxer = MLIPRelaxer(model=model, **relax_kwargs)
    oracles = [MLIPFormationEnergy(relaxer), MLIPBulkModulus(relaxer), MLIPShearModulus(relaxer), MLIPEnergy(relaxer)]
    return {o.name: o for o in oracles}
