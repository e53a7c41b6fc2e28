"""Relaxing structures with an MLIP (ASE ``FrechetCellFilter`` + FIRE/BFGS), cached per structure.

:class:`MLIPRelaxer` relaxes each distinct structure once (keyed by
:func:`matinvent.crystal.structure_hash.structure_key`) and keeps the :class:`Relaxed` result; every
property (energy, formation energy, E_hull, moduli) is then read off that one relaxation and
cached on it. Left-handed cells (det L < 0) are replaced by the same crystal with all three
lattice vectors negated first (CHGNet returns a wrong-signed stress otherwise). A structure that
cannot be handled (atoms closer than ``min_distance``, an element the model does not know, a
non-finite energy, …) gets a :class:`Relaxed` with ``structure=None`` and NaN energy, and NaN
from every property; the rest of the batch carries on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matinvent.crystal.structure_hash import structure_key
from matinvent.oracles.base import StructureLike, as_structures
from matinvent.oracles.mlip.batched import BatchedRelaxer
from matinvent.oracles.mlip.calculators import MODELS, load_calculator, load_weights_only, model_spec, require_package
from matinvent.oracles.mlip.elastic import elastic_tensor, eos_bulk_modulus, vrh_moduli
from matinvent.oracles.mlip.energies import relaxed_formation_energy, relaxed_hull_energy
from matinvent.oracles.mlip.relaxed import Relaxed, relaxable

log = logging.getLogger(__name__)
ENGINES = ("ase", "batched")  # one structure at a time (ASE) or many at once (torch-sim)


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
        checkpoint: a fine-tuned checkpoint file of ``model``'s architecture
            (:func:`~matinvent.oracles.mlip.calculators.load_calculator`), instead of the pretrained weights;
            checked at once (FileNotFoundError / ValueError), loaded on first use.
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
        checkpoint: str | Path | None = None,
        engine: str = "ase",
    ) -> None:
        if optimizer.upper() not in ("FIRE", "BFGS"):
            raise ValueError(f"optimizer must be 'FIRE' or 'BFGS', got {optimizer!r}")
        if strain_points not in (2, 4):
            raise ValueError(f"strain_points must be 2 or 4, got {strain_points}")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        key = model.lower()
        if calculator is None:
            require_package(model_spec(model).package, f"MLIP model {model!r}")
        default_correction = MODELS[key].mp2020_correction if key in MODELS else False
        self.model = model
        self.optimizer = optimizer.upper()
        self.fmax = float(fmax)
        self.max_steps = int(max_steps)
        self.relax_cell = bool(relax_cell)
        self.device = device
        self.eos_volume_range = float(eos_volume_range)
        self.eos_points = int(eos_points)
        self.strain = float(strain)
        self.strain_points = int(strain_points)
        self.inner_steps = int(inner_steps)
        self.min_distance = float(min_distance)
        self.mp2020_correction = default_correction if mp2020_correction is None else bool(mp2020_correction)
        if checkpoint is not None and calculator is None:
            load_weights_only(checkpoint)  # a missing or unsafe file fails here, not as NaN for every structure
        self.checkpoint = checkpoint
        self._calculator = calculator
        self._cache: dict[str, Relaxed] = {}
        self.n_relaxations = 0  # relaxations actually run (cache misses)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "batched" and (calculator is not None or self.optimizer != "FIRE" or not self.relax_cell):
            raise ValueError("engine 'batched' relaxes positions and cell with FIRE on the model's own weights")
        self.engine = engine
        self._batched: BatchedRelaxer | None = None

    @property
    def calculator(self) -> Any:
        """The ASE calculator, loaded on first use."""
        if self._calculator is None:
            self._calculator = load_calculator(self.model, self.device, self.checkpoint)
        return self._calculator

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- relaxation

    def relax(
        self, structures: Sequence[StructureLike], on_result: Callable[[int, Relaxed], None] | None = None
    ) -> list[Relaxed]:
        """One :class:`Relaxed` per structure (pymatgen ``Structure`` or ``Crystal``), cached by structure.

        ``engine="batched"`` relaxes the uncached ones together (:mod:`~matinvent.oracles.mlip.batched`).
        ``on_result(index, relaxed)`` is called for each structure the moment its relaxation is known.
        """
        structures = as_structures(list(structures))
        keys: list[str | None] = []
        out: list[Relaxed | None] = [None] * len(structures)
        for i, s in enumerate(structures):
            keys.append(None)
            if s is None:
                out[i] = Relaxed(None, math.nan, False, 0, "structure could not be built")
                continue
            try:
                keys[i] = structure_key(s)
            except Exception as exc:  # noqa: BLE001
                out[i] = Relaxed(None, math.nan, False, 0, f"{type(exc).__name__}: {exc}")
        if self.engine == "batched":
            self._relax_batched(structures, keys, on_result)
        for i, key in enumerate(keys):
            if key is not None:
                if key not in self._cache:
                    self._cache[key] = self._relax_one(structures[i])
                out[i] = self._cache[key]
            if on_result is not None and (self.engine != "batched" or key is None):
                on_result(i, out[i])
        return out  # type: ignore[return-value]

    def _relax_batched(self, structures: list[Any], keys: list[str | None], on_result: Any) -> None:
        """Relax the distinct uncached structures in one batch; cached ones are reported at once."""
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key is not None and key not in self._cache:
                first.setdefault(key, i)
        todo = list(first.values())

        def done(k: int, relaxed: Relaxed) -> None:
            key = keys[todo[k]]
            self._cache[key] = relaxed
            self.n_relaxations += 1
            if on_result is not None:
                for i, other in enumerate(keys):
                    if other == key:
                        on_result(i, relaxed)

        if on_result is not None:
            for i, key in enumerate(keys):
                if key is not None and key not in first:
                    on_result(i, self._cache[key])
        if todo:
            if self._batched is None:
                self._batched = BatchedRelaxer(
                    model=self.model, fmax=self.fmax, max_steps=self.max_steps, min_distance=self.min_distance,
                    device=self.device, checkpoint=self.checkpoint,
                )  # fmt: skip
            self._batched.relax([structures[i] for i in todo], on_result=done)

    def relaxed(self, structure: StructureLike) -> Relaxed:
        """The (cached) relaxation of one structure."""
        return self.relax([structure])[0]

    def _relax_one(self, structure: Any) -> Relaxed:
        self.n_relaxations += 1
        try:
            s = relaxable(structure, self.min_distance)
            atoms = self.atoms(s)
            initial = float(atoms.get_potential_energy()) / len(atoms)  # the optimiser's first step reuses it
            steps, converged = self.run_optimizer(atoms, self.max_steps, cell=self.relax_cell)
            energy = float(atoms.get_potential_energy()) / len(atoms)
            if not math.isfinite(energy):
                raise ValueError("non-finite energy")
            return Relaxed(self._to_structure(atoms, s), energy, converged, steps, initial_energy_per_atom=initial)
        except Exception as exc:  # noqa: BLE001 - one failure never stops the batch
            formula = getattr(getattr(structure, "composition", None), "reduced_formula", "?")
            log.warning("MLIP relaxation of %s failed: %s: %s", formula, type(exc).__name__, exc)
            return Relaxed(None, math.nan, False, 0, f"{type(exc).__name__}: {exc}")

    def atoms(self, structure: Any) -> Any:
        """ASE ``Atoms`` of a pymatgen structure with this relaxer's calculator attached."""
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = self.calculator
        return atoms

    @staticmethod
    def _to_structure(atoms: Any, like: Any) -> Any:
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(np.array(atoms.cell)), like.species, atoms.get_scaled_positions(wrap=True))

    def run_optimizer(self, atoms: Any, steps: int, cell: bool) -> tuple[int, bool]:
        """Relax ``atoms`` in place (positions, and the cell when ``cell``); (steps taken, converged)."""
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

    # -- properties of the relaxed structures (NaN where the relaxation or the property failed)

    def _property(
        self, structures: Sequence[StructureLike], name: str, compute: Callable[[Relaxed], float], cache: bool = True
    ) -> np.ndarray:
        out = np.full(len(structures), np.nan)
        for i, r in enumerate(self.relax(structures)):
            if not r.ok:
                continue
            if name in r.properties:
                value = r.properties[name]
            else:
                try:
                    value = float(compute(r))
                except Exception as exc:  # noqa: BLE001
                    log.warning("MLIP %s of %s failed: %s", name, r.structure.composition.reduced_formula, exc)
                    value = math.nan
                if cache:
                    r.properties[name] = value
            out[i] = value if math.isfinite(value) else np.nan
        return out

    def energy_per_atom(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """Model energy of the relaxed structures, eV/atom (raw model scale)."""
        return np.array([r.energy_per_atom for r in self.relax(structures)], dtype=np.float64)

    def formation_energy(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """Formation energy of the relaxed structures vs the MP elemental references, eV/atom (MP2020 scale)."""
        return self._property(structures, "formation_energy", lambda r: relaxed_formation_energy(r, self))

    def e_above_hull(self, structures: Sequence[StructureLike], hull: Any = None) -> np.ndarray:
        """Energy above the hull of the relaxed structures, eV/atom (``hull``: as
        :func:`matinvent.oracles.hull.e_above_hull`; None = the shipped MP-20 hull). Not cached: it depends on
        the hull, and the formation energy it uses is."""

        def compute(r: Relaxed) -> float:
            energy = relaxed_hull_energy(r, self, hull)
            if energy.reason:
                raise ValueError(energy.reason)
            return energy.e_above_hull

        return self._property(structures, "e_above_hull", compute, cache=False)

    def bulk_modulus(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """Birch–Murnaghan bulk modulus of the relaxed structures, GPa."""
        return self._property(structures, "bulk_modulus", lambda r: eos_bulk_modulus(self, r.structure))

    def shear_modulus(self, structures: Sequence[StructureLike]) -> np.ndarray:
        """Voigt–Reuss–Hill shear modulus from the finite-strain elastic tensor of the relaxed structures, GPa."""
        return self._property(structures, "shear_modulus", lambda r: vrh_moduli(self.elastic_tensor(r))[1])

    def elastic_tensor(self, relaxed: Relaxed) -> np.ndarray:
        """6×6 Voigt stiffness (GPa) of a relaxation (:func:`~.elastic.elastic_tensor`), cached on it."""
        if "elastic_tensor" not in relaxed.properties:
            relaxed.properties["elastic_tensor"] = elastic_tensor(self, relaxed.structure)
        return relaxed.properties["elastic_tensor"]
