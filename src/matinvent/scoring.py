"""Scoring structures for a task: read them, run the task's oracles, compute rewards and hits.

Used by ``matinvent score`` and by the RL loop. Input may be a folder of CIF files, an extxyz
file or a CDVAE/DiffCSP CSV. Before any oracle call a validity gate (``matinvent.validity.GATES``;
default ``physical``: covalent-radius contacts + density window) sorts out implausible
structures: they get NaN properties, reward 0, ``valid = False`` and the reason, and are never
sent to an oracle. A structure that cannot be read or evaluated gets NaN properties, reward 0
and ``failed``; it never stops the batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matinvent.crystal import Crystal, CrystalError
from matinvent.rewards import Task
from matinvent.validity import gate_flags, resolve_gate

RELAX_CHOICES = ("mlip",)
MLIP_PROPERTIES = ("formation_energy", "bulk_modulus", "shear_modulus")  # taken from the MLIP with relax="mlip"


@dataclass
class Scores:
    """Per-structure properties (``values[prop]``), reward, hit, failed and validity, aligned with the input."""

    values: dict[str, np.ndarray]
    reward: np.ndarray
    hit: np.ndarray
    failed: np.ndarray  # unreadable, or an oracle failed on a valid structure
    structures: list[Any]  # the structures the properties refer to (relaxed ones with relax="mlip")
    valid: np.ndarray | None = None  # passed the validity gate (only these reached the oracles)
    reason: list[str] = field(default_factory=list)  # why a structure is invalid ("" where valid)


def read_structures(path: str | Path) -> tuple[list[str], list[Crystal | None]]:
    """(ids, crystals) from a folder of CIFs, an extxyz file or a CDVAE CSV; unreadable → ``None``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        files = sorted(path.glob("*.cif"))
        if not files:
            raise FileNotFoundError(f"no .cif files in {path}")
        crystals: list[Crystal | None] = []
        for f in files:
            try:
                crystals.append(Crystal.read_cif(f))
            except CrystalError as exc:
                warnings.warn(f"{f.name}: {exc}", stacklevel=2)
                crystals.append(None)
        return [f.stem for f in files], crystals
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        from matinvent.datasets import read_cdvae_csv

        table = read_cdvae_csv(path)
        return list(table.ids), list(table.crystals)
    if name.endswith((".extxyz", ".xyz")):
        from ase.io import read

        try:
            frames = read(str(path), index=":", format="extxyz")
        except Exception as exc:  # noqa: BLE001 - ASE raises many kinds
            raise CrystalError(f"{path}: could not read extxyz: {exc}") from exc
        ids, crystals = [], []
        for i, atoms in enumerate(frames):
            ids.append(str(atoms.info.get("id", atoms.info.get("name", f"{path.stem}_{i:06d}"))))
            try:
                crystals.append(Crystal.from_atoms(atoms))
            except CrystalError as exc:
                warnings.warn(f"{path.name} frame {i}: {exc}", stacklevel=2)
                crystals.append(None)
        return ids, crystals
    if name.endswith(".cif"):
        return [path.stem], [Crystal.read_cif(path)]
    raise ValueError(f"{path}: expected a folder of CIF files, a .cif, an .extxyz or a CDVAE .csv(.gz)")


class Scorer:
    """Holds a task's oracles (built once) and scores batches of structures behind a validity gate."""

    def __init__(
        self,
        task: Task,
        relax: str | None = None,
        oracles: dict[str, Any] | None = None,
        validity: str = "physical",
        **relax_kw,
    ):
        if relax is not None and relax not in RELAX_CHOICES:
            raise ValueError(f"relax must be one of {RELAX_CHOICES} or None, got {relax!r}")
        self.validity = resolve_gate(validity)
        self.task = task
        self.relax = relax
        self.relaxer = None
        self.on_input: set[str] = set()  # properties computed from the input structures (the MLIP's own cache)
        built = dict(oracles or {})
        if relax == "mlip":
            from matinvent.oracles.mlip import mlip_oracles

            mlip = mlip_oracles(**relax_kw)
            self.relaxer = mlip["formation_energy"].relaxer
            for prop in task.properties:
                if prop in MLIP_PROPERTIES and prop not in task.oracles and prop not in built:
                    built[prop] = mlip[prop]
                    self.on_input.add(prop)
        for prop, oracle in task.build_oracles(skip=set(built)).items():
            built[prop] = oracle
        self.oracles = built

    def __call__(self, structures: list[Any], validity: str | None = None) -> Scores:
        """Score ``structures``; ``validity`` overrides the gate for this call (the RL loop gates first)."""
        from matinvent.oracles import as_structures

        structs = as_structures(structures)
        valid, reason = gate_flags(structs, self.validity if validity is None else resolve_gate(validity))
        unreadable = np.array([s is None for s in structs], dtype=bool)
        idx = np.flatnonzero(valid)
        inputs = [structs[i] for i in idx]
        relaxed_inputs = inputs
        if self.relaxer is not None and inputs:  # relax once (cached); other properties use the relaxed cells
            relaxed_inputs = [r.structure for r in self.relaxer.relax(inputs)]
        relaxed = list(structs)
        for i, r in zip(idx, relaxed_inputs, strict=True):
            relaxed[i] = r
        values = {prop: np.full(len(structs), np.nan) for prop in self.task.properties}
        if len(idx):
            for prop in self.task.properties:
                values[prop][idx] = self.oracles[prop](inputs if prop in self.on_input else relaxed_inputs)
        reward, hit, failed = self.task.rewards(values)
        failed = (failed & valid) | unreadable
        return Scores(
            values=values, reward=reward, hit=hit, failed=failed, structures=relaxed, valid=valid, reason=reason
        )


def scores_table(ids: list[str], structures: list[Any], scores: Scores) -> pd.DataFrame:
    """One row per structure: id, formula, one column per property, reward, hit (0/1), valid (0/1), reason."""
    formulas = []
    for s in structures:
        try:
            formulas.append(s.composition.reduced_formula if s is not None else "")
        except AttributeError:
            formulas.append(s.formula)
    data: dict[str, Any] = {"id": ids, "formula": formulas}
    data.update({k: v for k, v in scores.values.items()})
    data["reward"] = scores.reward
    data["hit"] = scores.hit.astype(int)
    data["valid"] = (scores.valid if scores.valid is not None else np.ones(len(ids), dtype=bool)).astype(int)
    data["reason"] = scores.reason or [""] * len(ids)
    return pd.DataFrame(data)
