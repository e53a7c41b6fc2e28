"""The Materials Project energy scale: elemental references, the MP2020 correction, formation energies.

Both MLIPs are trained on MPtrj (PBE / PBE+U, the U set of ``MPRelaxSet`` for oxides and fluorides
of V, Cr, Mn, Fe, Co, Ni, Mo, W). SevenNet-0 predicts the raw VASP energy, so its total energy is
put through pymatgen's ``MaterialsProject2020Compatibility`` as a ``ComputedStructureEntry``
whose parameters say what MP would have run: ``run_type`` GGA+U with the ``MPRelaxSet`` U values
when the most electronegative element is O or F and a U metal is present, GGA otherwise (POTCAR
check off, since there is no VASP run). That adds the anion (oxide / peroxide / superoxide from
O–O distances, S, F, Cl, N, H, …) and GGA/GGA+U mixing corrections. CHGNet is trained on the
MP2020-corrected energies, so its energy is used as is.

The elemental references μ (eV/atom) are the raw GGA energies per atom of the MP elemental ground
states, shipped as ``matinvent/data/mp_elemental_refs.json`` (89 elements; provenance in
``scripts/build_elemental_refs.py``). MP2020 corrects no pure element, so they serve both scales.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any


def elemental_refs_path() -> Path:
    """The shipped table of MP elemental reference energies."""
    return Path(str(resources.files("matinvent") / "data" / "mp_elemental_refs.json"))


@lru_cache(maxsize=1)
def mp_elemental_references() -> dict[str, float]:
    """Element symbol -> raw GGA energy per atom (eV/atom) of its MP ground state (the shipped table)."""
    table = json.loads(elemental_refs_path().read_text())
    return {el: float(ref["energy_per_atom"]) for el, ref in table["references"].items()}


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
    """Total energy (eV) with the MP2020 anion and GGA/GGA+U mixing corrections added.

    Raises:
        ValueError: MP2020 has no correction scheme for this composition.
    """
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    entry = ComputedStructureEntry(structure, energy, parameters=mp_run_parameters(structure.composition))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processed = _mp2020().process_entry(entry, clean=True, inplace=False)
    if processed is None:
        raise ValueError(f"MP2020 correction is not defined for {structure.composition.reduced_formula}")
    return float(processed.energy)


def formation_energy_per_atom(structure: Any, energy: float) -> float:
    """``(E − Σ n_el·μ_el) / N`` in eV/atom; ``energy`` (eV, total) must be on the MP2020-corrected scale.

    Raises:
        ValueError: an element has no MP reference.
    """
    refs = mp_elemental_references()
    comp = structure.composition
    missing = [el.symbol for el in comp.elements if el.symbol not in refs]
    if missing:
        raise ValueError(f"no MP elemental reference energy for {missing}")
    reference = sum(n * refs[el.symbol] for el, n in comp.items())
    return (energy - reference) / comp.num_atoms
