"""Physics oracles from a universal machine-learned interatomic potential (SevenNet-0 or CHGNet).

Every structure is relaxed once (ASE, ``FrechetCellFilter`` + FIRE/BFGS) by a shared
:class:`MLIPRelaxer` that caches the result by structure; the oracles then read off

- ``energy_per_atom`` (eV/atom): the model's energy of the relaxed structure (raw model output);
- ``formation_energy`` (eV/atom): ``(E − Σ n_el·μ_el) / N`` on the MP2020-corrected energy scale;
- ``e_above_hull`` (eV/atom): that formation energy against the convex hull of :mod:`matinvent.oracles.hull`
  (the shipped MP-20 hull by default);
- ``bulk_modulus`` (GPa): Birch–Murnaghan fit of E(V) over isotropically scaled relaxed cells;
- ``shear_modulus`` (GPa): Voigt–Reuss–Hill G (pymatgen ``ElasticTensor``) of a finite-strain
  elastic tensor (relaxed ions).

Modules: :mod:`~.calculators` (loading the models), :mod:`~.references` (MP elemental references
and the MP2020 correction: the energy scale), :mod:`~.relax` (the relaxer and its cache),
:mod:`~.energies` (E_form and E_hull of a relaxation), :mod:`~.elastic` (EOS, elastic tensor,
VRH) and :mod:`~.oracles` (the oracle classes).

Needs the ``mlip`` extra: ``pip install 'matinvent[mlip]'`` (sevenn, chgnet; weights ship in
their wheels, nothing is downloaded). Importing this package needs neither.
"""

from __future__ import annotations

from matinvent.oracles.mlip.calculators import (
    EXTRA_HINT,
    MODELS,
    ModelSpec,
    load_calculator,
    load_weights_only,
    model_spec,
    require_package,
)
from matinvent.oracles.mlip.elastic import elastic_tensor, eos_bulk_modulus, voigt_strain, vrh_moduli
from matinvent.oracles.mlip.energies import HullEnergy, relaxed_formation_energy, relaxed_hull_energy
from matinvent.oracles.mlip.oracles import (
    MLIP_ORACLES,
    MLIPBulkModulus,
    MLIPEnergy,
    MLIPEnergyAboveHull,
    MLIPFormationEnergy,
    MLIPShearModulus,
    mlip_oracles,
)
from matinvent.oracles.mlip.references import (
    elemental_refs_path,
    formation_energy_per_atom,
    mp2020_corrected_energy,
    mp_elemental_references,
    mp_run_parameters,
)
from matinvent.oracles.mlip.relax import MLIPRelaxer, structure_key
from matinvent.oracles.mlip.relaxed import Relaxed, right_handed

__all__ = [
    "EXTRA_HINT",
    "MLIP_ORACLES",
    "MODELS",
    "HullEnergy",
    "MLIPBulkModulus",
    "MLIPEnergy",
    "MLIPEnergyAboveHull",
    "MLIPFormationEnergy",
    "MLIPRelaxer",
    "MLIPShearModulus",
    "ModelSpec",
    "Relaxed",
    "elastic_tensor",
    "elemental_refs_path",
    "eos_bulk_modulus",
    "formation_energy_per_atom",
    "load_calculator",
    "load_weights_only",
    "mlip_oracles",
    "model_spec",
    "mp2020_corrected_energy",
    "mp_elemental_references",
    "mp_run_parameters",
    "relaxed_formation_energy",
    "relaxed_hull_energy",
    "require_package",
    "right_handed",
    "structure_key",
    "voigt_strain",
    "vrh_moduli",
]
