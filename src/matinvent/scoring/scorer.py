"""Scoring structures for a task: read them, run the task's oracles, compute rewards and hits.

Used by ``matinvent score`` and by the RL loop, on structures read by
:func:`matinvent.io.structure_files.read_structure_items` (one bad file, frame or row costs only its own
item). Before any oracle call a validity
gate (``matinvent.crystal.validity.GATES``; default ``physical``: covalent-radius contacts + density
window) sorts out implausible structures: they get NaN properties, reward 0, ``valid = False``
and the reason, and are never sent to an oracle. A structure that cannot be read or evaluated
gets NaN properties, reward 0 and ``failed``; it never stops the batch.

With ``Scorer(task, timeout_s=S)`` each structure's call of a registry oracle runs in a worker
process (``matinvent.scoring.local_executor.LocalExecutor``) and is killed after S seconds: a hang, even in C
code, costs NaN and a reason for that structure only. Command oracles bound themselves (their own
``timeout``, process group killed) and MLIP relaxations run in-process. With an ``executor``
(``matinvent.scoring.executors.make_executor``: local workers, or Dask, ``matinvent.scoring.dask_executor``) every
oracle call, command oracles and relaxations included, goes through it one structure at a time.
With a ``cache`` (``matinvent.scoring.oracle_cache``) results are looked up first and each new one is
stored the moment it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matinvent.crystal.structure_hash import structure_key
from matinvent.crystal.validity import gate_flags, gate_validity, resolve_gate
from matinvent.oracles.command import CommandOracle
from matinvent.oracles.mlip.oracles import MLIP_ORACLES
from matinvent.oracles.mlip.relax_step import MLIPRelaxStep, RelaxResult
from matinvent.scoring.executor import OracleExecutor, OracleSpec, TransientReason
from matinvent.scoring.local_executor import LocalExecutor
from matinvent.scoring.oracle_cache import OracleCache, oracle_key
from matinvent.scoring.rewards import STABILITY_PROP, Target, apply_stability, stability_target
from matinvent.scoring.tasks import Task

RELAX_CHOICES = ("mlip",)
# the MLIP's properties that relax="mlip" scores (names declared once, on the oracle classes); the raw
# energy_per_atom is the model's own scale, not a task property
MLIP_PROPERTIES = tuple(c.name for c in MLIP_ORACLES if c.name != "energy_per_atom")


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
    # with relax="mlip", per structure (NaN where not relaxed): E_hull (eV/atom) on the relaxation, the energy
    # drop start → relaxed (eV/atom) and the sites' RMSD (Å); ``relaxed`` holds every relaxed structure, also
    # those the gate then rejected (``structures`` has None there: not scored)
    e_hull: np.ndarray | None = None
    energy_drop: np.ndarray | None = None
    rmsd: np.ndarray | None = None
    relaxed: list[Any] | None = None


class Scorer:
    """Holds a task's oracles (built once) and scores batches of structures behind a validity gate.

    ``oracles`` maps properties to oracles or :class:`~matinvent.scoring.executor.OracleSpec`. Where the calls run:

    - in-process (default): each oracle on the whole batch;
    - ``timeout_s`` (seconds per structure and oracle): the registry oracles and the given specs in the
      workers of a one-worker ``LocalExecutor`` (command oracles bound themselves; relaxations in-process);
    - ``executor`` (e.g. :class:`~matinvent.scoring.dask_executor.DaskExecutor`, see ``executors.make_executor``):
      every spec, the task's command oracles and, with ``relax="mlip"``, each structure's relaxation (with
      the MLIP properties read off it, :class:`~matinvent.oracles.mlip.relax_step.MLIPRelaxStep`) through it.

    ``cache`` (an :class:`~matinvent.scoring.oracle_cache.OracleCache` or its sqlite path): results are looked up first
    and only misses are evaluated; each result is stored the moment it arrives, except failures marked
    :class:`~matinvent.scoring.executor.TransientReason` (timeouts, lost workers). Oracles given as instances are not
    cached (nothing says what they compute); specs, the task's oracles and relaxations are.
    ``close()`` stops the executor and closes the cache.

    With ``relax="mlip"`` the order is relax → gate → score: the gate (``validity``) also applies to each
    relaxed structure, and one it rejects gets reward 0, ``valid = False`` and the reason "after relaxation:
    ...", with no further oracle call. ``stability`` (a :func:`~matinvent.scoring.rewards.stability_target`)
    multiplies each reward by its factor on the relaxation's E_hull and makes a hit need E_hull inside it.
    """

    def __init__(
        self,
        task: Task,
        relax: str | None = None,
        oracles: dict[str, Any] | None = None,
        validity: str = "physical",
        timeout_s: float | None = None,
        executor: OracleExecutor | None = None,
        cache: OracleCache | str | Path | None = None,
        stability: Target | None = None,
        **relax_kw,
    ):
        if relax is not None and relax not in RELAX_CHOICES:
            raise ValueError(f"relax must be one of {RELAX_CHOICES} or None, got {relax!r}")
        if stability is not None and relax is None:
            raise ValueError("stability needs relax='mlip' (its E_hull comes from the loop's own relaxation)")
        self.stability = stability
        if timeout_s is not None and not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive finite number of seconds or None, got {timeout_s!r}")
        self.validity = resolve_gate(validity)
        self.task = task
        self.relax = relax
        self.relaxer = None  # the in-process MLIP relaxer (None when relaxations run in an executor)
        given = dict(oracles or {})
        routed = executor is not None or timeout_s is not None  # specs go to an executor
        self.on_input: set[str] = set()  # MLIP properties, read off each input's relaxation
        self.relax_spec: OracleSpec | None = None
        self._relax_step: MLIPRelaxStep | None = None
        self._relax_key = ""
        if relax == "mlip":
            props = [p for p in task.properties if p in MLIP_PROPERTIES and p not in task.oracles and p not in given]
            self.on_input = set(props)
            for free in ("formation_energy", STABILITY_PROP):  # read off the relaxation's energy at no cost: always
                if free not in props:  # kept (E_hull: the memory and stability), so the cache serves any task
                    props.append(free)
            self.relax_spec = OracleSpec("mlip-relax", {"properties": props, **relax_kw}, factory=MLIPRelaxStep)
            self._relax_key = oracle_key(OracleSpec("mlip-relax", relax_kw, factory=MLIPRelaxStep))
            if executor is None:
                self._relax_step = MLIPRelaxStep(props, **relax_kw)
                self.relaxer = self._relax_step.relaxer
        self.oracles: dict[str, Any] = {}
        self.specs: dict[str, OracleSpec] = {}  # properties whose calls go through the executor
        self.keys: dict[str, str] = {}  # properties whose results are cached, by oracle key
        for prop, oracle in given.items():
            if isinstance(oracle, OracleSpec):
                self.keys[prop] = oracle_key(oracle)
                if routed:
                    self.specs[prop] = oracle
                else:
                    self.oracles[prop] = oracle.build()
            else:
                self.oracles[prop] = oracle
        own = [p for p in task.properties if p not in given and p not in self.on_input]
        for prop in own:
            command = prop in task.oracles
            spec = OracleSpec(prop, {"name": prop, **task.oracles[prop]}, factory=CommandOracle) if command else None
            spec = spec or OracleSpec(prop)
            self.keys[prop] = oracle_key(spec)
            if executor is not None or (routed and not command):
                self.specs[prop] = spec
        self.oracles.update(task.build_oracles(skip=set(task.properties) - {p for p in own if p not in self.specs}))
        if executor is None and self.specs:
            executor = LocalExecutor(timeout_s)
        self.timeout_s = timeout_s
        self.executor = executor
        self.cache = OracleCache(cache) if isinstance(cache, str | Path) else cache
        # called as each structure's result arrives: (stage, done, total), e.g. a progress bar's postfix
        self.on_progress: Callable[[str, int, int], None] | None = None

    def _evaluate(self, prop: str, structures: list[Any]) -> tuple[np.ndarray, list[str]]:
        """Values of ``prop`` for ``structures`` and per-structure failure reasons ("" where it worked).

        ``None`` structures (failed relaxations, which carry their own reason) get NaN without a call.
        """
        values, reasons = np.full(len(structures), np.nan), [""] * len(structures)
        key = self.keys.get(prop) if self.cache is not None else None
        hashes = [_hash(s) for s in structures] if key else [None] * len(structures)
        cached = self.cache.get_many(hashes, key) if key else {}
        for i, hit in cached.items():
            values[i], reasons[i] = hit.value, hit.reason
        todo = [i for i, s in enumerate(structures) if s is not None and i not in cached]
        if not todo:
            return values, reasons

        finished = [0]

        def store(j: int, value: float, reason: str) -> None:
            i = todo[j]
            if key and hashes[i] is not None and not isinstance(reason, TransientReason):
                self.cache.put(hashes[i], key, value, reason)
            finished[0] += 1
            self._progress(prop, finished[0], len(todo))

        batch = [structures[i] for i in todo]
        if prop in self.specs:
            got, why = self.executor.evaluate(self.specs[prop], batch, on_result=store)
        else:
            oracle = self.oracles[prop]
            size = max(1, int(getattr(oracle, "batch_size", 0) or len(batch))) if key else len(batch)
            got, why = np.full(len(batch), np.nan), [""] * len(batch)
            for start in range(0, len(batch), size):  # with a cache, stored chunk by chunk as computed
                got[start : start + size] = oracle(batch[start : start + size])
                for j in range(start, min(start + size, len(batch))):
                    store(j, got[j], "")
        values[todo] = got
        for i, w in zip(todo, why, strict=True):
            reasons[i] = w
        return values, reasons

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, done, total)

    def _relax(self, inputs: list[Any]) -> tuple[list[RelaxResult | None], list[str]]:
        """Each input's relaxation and MLIP properties (``None`` where the step itself failed), and reasons."""
        results: list[RelaxResult | None] = [None] * len(inputs)
        reasons = [""] * len(inputs)
        need = list(self.relax_spec.kwargs["properties"])
        key = self._relax_key if self.cache is not None else None
        hashes = [_hash(s) for s in inputs] if key else [None] * len(inputs)
        cached = self.cache.get_many(hashes, key) if key else {}
        done = set()
        for i, hit in cached.items():
            if hit.data is None:  # the step itself failed on this structure (an oracle error): final
                done.add(i)
                reasons[i] = hit.reason
            elif set(need) <= set(hit.data.get("values") or {}):  # else stored with fewer properties: again
                done.add(i)
                results[i], reasons[i] = RelaxResult.from_dict(hit.data), hit.reason
        todo = [i for i in range(len(inputs)) if i not in done]

        finished = [0]

        def store(j: int, result: RelaxResult | None, reason: str) -> None:
            i = todo[j]
            finished[0] += 1
            self._progress("relax", finished[0], len(todo))
            if not key or hashes[i] is None or isinstance(reason, TransientReason):
                return
            data = None
            if result is not None:
                old = cached.get(i)
                old_values = (old.data or {}).get("values") or {} if old else {}
                data = result.to_dict()
                data["values"] = {**old_values, **data["values"]}
            self.cache.put(hashes[i], key, np.nan, reason or (result.reason if result else ""), data)

        batch = [inputs[i] for i in todo]
        if self._relax_step is None:
            got, why = self.executor.map(self.relax_spec, batch, on_result=store)
        else:
            why = [""] * len(batch)
            got = self._relax_step.apply_many(batch, on_result=lambda j, r: store(j, r, ""))
        for i, r, w in zip(todo, got, why, strict=True):
            results[i], reasons[i] = r, w or (r.reason if r is not None else "")
        return results, reasons

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
        values = {prop: np.full(len(structs), np.nan) for prop in self.task.properties}
        extra = {k: np.full(len(structs), np.nan) for k in ("e_hull", "energy_drop", "rmsd")}
        all_relaxed: list[Any] | None = None
        if self.relax_spec is not None:
            all_relaxed = [None] * len(structs)
        if self.relax_spec is not None and inputs:  # relax once; other properties use the relaxed cells
            results, why = self._relax(inputs)
            relaxed_inputs = [r.structure if r is not None else None for r in results]
            for prop in self.on_input:
                values[prop][idx] = [r.values.get(prop, np.nan) if r is not None else np.nan for r in results]
            for key, get in (
                ("e_hull", lambda r: r.values.get(STABILITY_PROP, np.nan)),
                ("energy_drop", lambda r: r.energy_drop),
                ("rmsd", lambda r: r.rmsd),
            ):
                extra[key][idx] = [get(r) if r is not None else np.nan for r in results]
            for i, w in zip(idx, why, strict=True):
                if w:
                    reason[i] = f"{reason[i]}; {w}" if reason[i] else w
            for j, (i, r) in enumerate(zip(idx, relaxed_inputs, strict=True)):  # relax -> gate -> score
                all_relaxed[i] = r
                if r is None:
                    continue
                ok, why_not = gate_validity(r, self.validity)
                if not ok:
                    valid[i], relaxed_inputs[j] = False, None
                    reason[i] = f"after relaxation: {why_not}"
                    for prop in self.on_input:
                        values[prop][i] = np.nan
        relaxed = list(structs)
        for i, r in zip(idx, relaxed_inputs, strict=True):
            relaxed[i] = r
        if len(idx):
            for prop in self.task.properties:
                if prop in self.on_input:
                    continue
                got, why = self._evaluate(prop, relaxed_inputs)
                values[prop][idx] = got
                for i, w in zip(idx, why, strict=True):
                    if w:
                        reason[i] = f"{reason[i]}; {w}" if reason[i] else w
        reward, hit, failed = self.task.rewards(values)
        if self.stability is not None:
            reward, hit = apply_stability(reward, hit, extra["e_hull"], self.stability)
        reward, hit = np.where(valid, reward, 0.0), hit & valid
        failed = (failed & valid) | unreadable
        relaxing = self.relax_spec is not None
        return Scores(
            values=values, reward=reward, hit=hit, failed=failed, structures=relaxed, valid=valid, reason=reason,
            e_hull=extra["e_hull"] if relaxing else None, energy_drop=extra["energy_drop"] if relaxing else None,
            rmsd=extra["rmsd"] if relaxing else None, relaxed=all_relaxed,
        )  # fmt: skip

    def close(self) -> None:
        """Stop the executor's workers (a later call starts new ones) and close the cache."""
        if self.executor is not None:
            self.executor.close()
        if self.cache is not None:
            self.cache.close()


def settle_pipeline(
    relax: str | None, stability: str | None = "auto", task: Task | None = None
) -> tuple[str | None, str]:
    """``relax`` (auto | mlip | none | None) and ``stability`` (auto | hull | none | None) settled to (mlip or None,
    hull or none): auto relaxes with the MLIP when its extra (sevenn + torch-sim) is installed, unless the
    ``task`` scores crystals as generated (``task.relax == "none"``), and checks stability when it relaxes."""
    from matinvent.oracles.mlip.calculators import mlip_available

    if relax not in ("auto", "mlip", "none", None):
        raise ValueError(f"relax must be auto, mlip or none, got {relax!r}")
    if stability not in ("auto", "hull", "none", None):
        raise ValueError(f"stability must be auto, hull or none, got {stability!r}")
    if relax == "auto":
        relax = "mlip" if mlip_available() and (task is None or task.relax != "none") else None
    relax = None if relax == "none" else relax
    if stability == "hull" and relax is None:
        raise ValueError("stability 'hull' needs relax 'mlip': E_hull comes from the relaxation")
    return relax, "hull" if stability == "hull" or (stability == "auto" and relax) else "none"


def resolve_pipeline(
    relax: str | None, stability: str | None = "auto", task: Task | None = None
) -> tuple[str | None, Target | None]:
    """:func:`settle_pipeline`, with the stability condition as the :class:`Target` a :class:`Scorer` takes."""
    relax, stability = settle_pipeline(relax, stability, task)
    return relax, stability_target() if stability == "hull" else None


def _hash(structure: Any) -> str | None:
    """The cache key of a structure (``None`` for none, or one that cannot be hashed: never cached)."""
    if structure is None:
        return None
    try:
        return structure_key(structure)
    except Exception:  # noqa: BLE001 - an odd object is evaluated, just not cached
        return None


def scores_table(
    ids: list[str], structures: list[Any], scores: Scores, read_reasons: list[str] | None = None
) -> pd.DataFrame:
    """One row per structure: id, formula, one column per property, reward, hit (0/1), valid (0/1), reason.

    ``read_reasons`` (of ``read_structure_items``) say why an unreadable item has no structure.
    """
    formulas = []
    if scores.relaxed is not None:  # a relaxation the gate then rejected still names its formula
        structures = [s if s is not None else r for s, r in zip(structures, scores.relaxed, strict=True)]
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
    if scores.e_hull is not None:  # relaxed: E_hull (eV/atom), energy drop (eV/atom) and RMSD (Å) of each relaxation
        data.update(relax_e_hull=scores.e_hull, relax_energy_drop=scores.energy_drop, relax_rmsd=scores.rmsd)
    data["reward"] = scores.reward
    data["hit"] = scores.hit.astype(int)
    data["valid"] = (scores.valid if scores.valid is not None else np.ones(len(ids), dtype=bool)).astype(int)
    data["reason"] = reason
    return pd.DataFrame(data)
