"""Scoring structures for a task: read them, run the task's oracles, compute rewards and hits.

Used by ``matinvent score`` and by the RL loop. Input may be a folder of CIF files, an extxyz
file or a CDVAE/DiffCSP CSV; every file, frame and row is read on its own (``read_structure_items``),
after the cheap checks of ``matinvent.structure_checks``, and one that fails becomes an item with a
reason naming the file (and frame or row) and the problem. Before any oracle call a validity
gate (``matinvent.validity.GATES``; default ``physical``: covalent-radius contacts + density
window) sorts out implausible structures: they get NaN properties, reward 0, ``valid = False``
and the reason, and are never sent to an oracle. A structure that cannot be read or evaluated
gets NaN properties, reward 0 and ``failed``; it never stops the batch.

With ``Scorer(task, timeout_s=S)`` each structure's call of a registry oracle runs in a worker
process (``matinvent.executor.LocalExecutor``) and is killed after S seconds: a hang, even in C
code, costs NaN and a reason for that structure only. Command oracles bound themselves (their own
``timeout``, process group killed) and MLIP relaxations run in-process.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from matinvent.crystal import Crystal, CrystalError, iter_extxyz
from matinvent.executor import LocalExecutor, OracleExecutor, OracleSpec
from matinvent.rewards import Task
from matinvent.structure_checks import MAX_ATOMS, check_volume_per_atom
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


class StructureItems(NamedTuple):
    """Aligned per-item ids, crystals (``None`` where unusable) and reasons (``""`` where read)."""

    ids: list[str]
    crystals: list[Crystal | None]
    reasons: list[str]


def read_structure_items(path: str | Path, max_atoms: int | None = MAX_ATOMS) -> StructureItems:
    """Every item of a folder of CIFs, a .cif, an extxyz file or a CDVAE CSV, each read on its own.

    A file, frame or row that cannot be used (unparsable, more than ``max_atoms`` atoms, non-element
    symbols, partial occupancies, absurd cell or volume per atom, …) gets crystal ``None`` and a
    reason naming it; one warning sums them up. Only a missing path, an empty folder, an extxyz
    without frames or a CSV without a ``cif`` column raise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    name = path.name.lower()
    if path.is_dir() or name.endswith(".cif"):
        items, labels = _read_cif_files(path, max_atoms)
    elif name.endswith((".csv", ".csv.gz")):
        from matinvent.datasets import read_cdvae_csv

        table = read_cdvae_csv(path, max_atoms=max_atoms, keep_failed=True)
        items = StructureItems(list(table.ids), list(table.crystals), list(table.reasons))
        labels = [f"{path.name} row {i} ({row_id})" for i, row_id in enumerate(table.ids)]
    elif name.endswith((".extxyz", ".xyz")):
        frames = list(iter_extxyz(path, max_atoms))
        if not frames:
            raise CrystalError(f"{path}: no frames")
        items = StructureItems(*(list(column) for column in zip(*frames, strict=True)))
        labels = [f"{path.name} frame {i}" for i in range(len(frames))]
    else:
        raise ValueError(f"{path}: expected a folder of CIF files, a .cif, an .extxyz or a CDVAE .csv(.gz)")
    for i, crystal in enumerate(items.crystals):
        if crystal is not None and (why := check_volume_per_atom(crystal.volume, crystal.num_atoms)):
            items.crystals[i], items.reasons[i] = None, f"{labels[i]}: {why}"
    failed = [r for r in items.reasons if r]
    if failed:
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        warnings.warn(
            f"{path}: {len(failed)} of {len(items.ids)} structures unusable: {'; '.join(failed[:3])}{more}",
            stacklevel=2,
        )
    return items


def _read_cif_files(path: Path, max_atoms: int | None) -> tuple[StructureItems, list[str]]:
    """The items of a .cif or a folder's ``*.cif`` (sorted by name), and the file names."""
    files = sorted(path.glob("*.cif")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .cif files in {path}")
    items = StructureItems([f.stem for f in files], [], [])
    for f in files:
        crystal, reason = None, ""
        try:
            crystal = Crystal.read_cif(f, max_atoms=max_atoms)
        except CrystalError as exc:
            reason = str(exc).replace(str(f), f.name, 1)
        except Exception as exc:  # noqa: BLE001 - a hostile file must cost only its own row
            reason = f"{f.name}: {type(exc).__name__}: {exc}"
        items.crystals.append(crystal)
        items.reasons.append(reason)
    return items, [f.name for f in files]


def read_structures(path: str | Path, max_atoms: int | None = MAX_ATOMS) -> tuple[list[str], list[Crystal | None]]:
    """(ids, crystals) of ``read_structure_items``; unusable items → ``None`` (the warning names them)."""
    ids, crystals, _ = read_structure_items(path, max_atoms=max_atoms)
    return ids, crystals


class Scorer:
    """Holds a task's oracles (built once) and scores batches of structures behind a validity gate.

    ``oracles`` maps properties to oracles or :class:`~matinvent.executor.OracleSpec`; ``timeout_s``
    (seconds per structure and oracle; ``None``: in-process, unbounded) sends the registry oracles and
    the given specs through ``executor`` (default: a one-worker ``LocalExecutor``). ``close()`` stops it.
    """

    def __init__(
        self,
        task: Task,
        relax: str | None = None,
        oracles: dict[str, Any] | None = None,
        validity: str = "physical",
        timeout_s: float | None = None,
        executor: OracleExecutor | None = None,
        **relax_kw,
    ):
        if relax is not None and relax not in RELAX_CHOICES:
            raise ValueError(f"relax must be one of {RELAX_CHOICES} or None, got {relax!r}")
        if timeout_s is not None and not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive finite number of seconds or None, got {timeout_s!r}")
        self.validity = resolve_gate(validity)
        self.task = task
        self.relax = relax
        self.relaxer = None
        self.on_input: set[str] = set()  # properties computed from the input structures (the MLIP's own cache)
        built = dict(oracles or {})
        specs = {prop: o for prop, o in built.items() if isinstance(o, OracleSpec)}
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
            if prop not in task.oracles:
                specs[prop] = OracleSpec(prop)
        if timeout_s is None:
            built.update({prop: spec.build() for prop, spec in specs.items() if built[prop] is spec})
            specs = {}
        elif executor is None and specs:
            executor = LocalExecutor(timeout_s)
        self.oracles = built
        self.specs = specs  # properties whose calls go through the executor
        self.timeout_s = timeout_s
        self.executor = executor

    def _evaluate(self, prop: str, structures: list[Any]) -> tuple[np.ndarray, list[str]]:
        """Values of ``prop`` for ``structures`` and per-structure failure reasons ("" where it worked)."""
        if prop in self.specs:
            return self.executor.evaluate(self.specs[prop], structures)
        return self.oracles[prop](structures), [""] * len(structures)

    def __call__(self, structures: list[Any], validity: str | None = None) -> Scores:
        """Score ``structures``; ``validity`` overrides the gate for this call (the RL loop gates first)."""
        from matinvent.oracles import as_structures

        structs = as_structures(structures)
        valid, reason = gate_flags(structs, self.validity if validity is None else resolve_gate(validity))
        reason = list(reason)
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
                got, why = self._evaluate(prop, inputs if prop in self.on_input else relaxed_inputs)
                values[prop][idx] = got
                for i, w in zip(idx, why, strict=True):
                    if w:
                        reason[i] = f"{reason[i]}; {w}" if reason[i] else w
        reward, hit, failed = self.task.rewards(values)
        failed = (failed & valid) | unreadable
        return Scores(
            values=values, reward=reward, hit=hit, failed=failed, structures=relaxed, valid=valid, reason=reason
        )

    def close(self) -> None:
        """Stop the executor's workers (a later call starts new ones)."""
        if self.executor is not None:
            self.executor.close()


def scores_table(
    ids: list[str], structures: list[Any], scores: Scores, read_reasons: list[str] | None = None
) -> pd.DataFrame:
    """One row per structure: id, formula, one column per property, reward, hit (0/1), valid (0/1), reason.

    ``read_reasons`` (of ``read_structure_items``) say why an unreadable item has no structure.
    """
    formulas = []
    for s in structures:
        try:
            formulas.append(s.composition.reduced_formula if s is not None else "")
        except AttributeError:
            formulas.append(s.formula)
    reason = list(scores.reason or [""] * len(ids))
    for i, why in enumerate(read_reasons or []):
        if why and structures[i] is None:
            reason[i] = f"no structure: {why}"
    data: dict[str, Any] = {"id": ids, "formula": formulas}
    data.update({k: v for k, v in scores.values.items()})
    data["reward"] = scores.reward
    data["hit"] = scores.hit.astype(int)
    data["valid"] = (scores.valid if scores.valid is not None else np.ones(len(ids), dtype=bool)).astype(int)
    data["reason"] = reason
    return pd.DataFrame(data)
