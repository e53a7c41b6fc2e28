"""Re-check the hits of an optimisation run with an independent oracle: relax, re-score, E_hull.

The hits a run found were scored on the generated (unrelaxed) structures. Here the distinct
hits of ``RUN/memory.sqlite`` (valid, ``hit``; one per reduced formula, the highest reward kept,
as :mod:`matinvent.rl.metrics` counts hits) — all of them, or a seeded random subset of ``n_max``
(:func:`matinvent.evaluation.stability.pick_indices`) — are relaxed with an MLIP (SevenNet-0 by default,
:class:`~matinvent.oracles.mlip.MLIPRelaxer`) and re-scored on the relaxed structure:

- ``still_hit``: the task's own oracles (CGCNN, density, HHI, command oracles) inside every window;
- ``still_hit_mlip``: the same with the MLIP's ``formation_energy`` / ``bulk_modulus`` /
  ``shear_modulus`` in place of the oracles' (None when the task has none of them);
- ``e_above_hull`` (eV/atom): MLIP formation energy on the MP2020 scale vs the reference hull
  (:mod:`matinvent.oracles.hull`, shipped MP-20 hull by default), as :mod:`matinvent.evaluation.stability` computes it;
- ``survives``: still a hit and ``e_above_hull ≤ 0.1`` eV/atom — ``still_hit_mlip`` when the loop itself
  scored on MLIP relaxations (``relax: mlip``: its MLIP properties are re-scored by the other model),
  else ``still_hit``.

Fractions divide by the number checked: a failed relaxation (NaN row with a ``reason``) counts
as not surviving. ``burden_rechecked = evaluations / (n_hits_distinct × frac_survive)`` estimates
the evaluations spent per surviving distinct hit (``evaluations`` = valid crystals sent to the
oracles); it is exact when every hit was checked and an extrapolation from the subset otherwise.

Writes ``RUN/recheck.json`` (headline numbers, settings and one entry per checked hit),
``RUN/recheck.csv`` (one row per checked hit), the relaxed structures as
``RUN/recheck/<rank>_<formula>_<memory id>.cif``, and a ``recheck`` block in ``RUN/summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from matinvent.config_io import ConfigError
from matinvent.crystal.record import Crystal
from matinvent.evaluation.recheck_files import clean, merge_summary, write_cifs, write_csv, write_json
from matinvent.evaluation.stability import (
    FAR_BELOW_HULL,
    STABLE_THRESHOLD,
    empty_row,
    is_stable,
    measure_structure,
    pick_indices,
)
from matinvent.io.run_memory import read_memory
from matinvent.oracles.hull import ReferenceHull, load_hull
from matinvent.oracles.mlip import MLIPRelaxer
from matinvent.oracles.mlip.calculators import mlip_available
from matinvent.scoring.scorer import MLIP_PROPERTIES
from matinvent.scoring.tasks import Task, load_task

RUN_FILE = "run.json"
SUMMARY = "summary.json"
RECHECK_JSON = "recheck.json"
RECHECK_CSV = "recheck.csv"
CIF_DIR = "recheck"
HEADLINE = (
    "n_hits_distinct", "n_checked", "subset", "frac_still_hit", "frac_still_hit_mlip", "median_e_above_hull",
    "frac_e_hull_le_0.1", "n_far_below_hull", "frac_survive", "n_survive", "burden_rechecked",
    "burden_rechecked_is_estimate", "model",
)  # fmt: skip


def distinct_hits(memory: pd.DataFrame) -> pd.DataFrame:
    """Valid hits, one per reduced formula (highest reward, then earliest), in order of first appearance."""
    hits = memory[(memory["hit"] == 1) & (memory["valid"] == 1)]
    best = hits.sort_values(["reward", "id"], ascending=[False, True], kind="stable").drop_duplicates("formula")
    return best.sort_values("id").reset_index(drop=True)


def recheck_run(
    run_dir: str | Path,
    n_max: int | None = 50,
    seed: int = 0,
    relaxer: MLIPRelaxer | None = None,
    hull: str | Path | ReferenceHull | None = None,
    progress: bool = True,
    task: str | Path | Task | None = None,
    mlip_moduli: bool = True,
    model: str | None = None,
) -> dict[str, Any]:
    """Relax and re-score the distinct hits of a run folder; write and return ``recheck.json``'s content.

    Args:
        run_dir: folder written by ``matinvent optimize`` (``run.json``, ``memory.sqlite``).
        n_max: check at most this many distinct hits (a seeded random subset); None = all.
        seed: seed of the subset.
        relaxer: the :class:`MLIPRelaxer` (and cache) to use; default one of ``model``.
        model: the MLIP that relaxes the hits; None: :func:`independent_model` (the one the loop did not use).
        hull: hull CSV or :class:`ReferenceHull`; None = the shipped MP-20 hull.
        progress: tqdm bar advancing once per relaxed structure.
        task: the run's task (name, YAML path or :class:`Task`); default ``run.json``'s ``task``
            (pass it for runs on a user task file, whose name alone cannot be loaded).
        mlip_moduli: also compute the MLIP's bulk/shear moduli (an EOS and an elastic tensor per
            hit, ~30 extra relaxations each); False keeps only its formation energy.

    Raises:
        FileNotFoundError: ``run.json`` or ``memory.sqlite`` is missing (the message names it).
        ValueError: ``run.json`` is unreadable or lacks ``task``; ``n_max`` < 1; the memory lacks
            a column of the task's properties.
    """
    run_dir = Path(run_dir)
    info = _read_run(run_dir)
    memory = read_memory(run_dir)
    task = _task(task, info, run_dir)
    missing = [p for p in task.properties if p not in memory.columns]
    if missing:
        raise ValueError(f"{run_dir / 'memory.sqlite'} has no column for task properties {missing}")
    if n_max is not None and n_max < 1:
        raise ValueError(f"n_max must be >= 1 or None (all hits), got {n_max}")
    t0 = time.time()
    hits = distinct_hits(memory)
    n_hits = len(hits)
    picked = list(range(n_hits)) if n_max is None or n_max >= n_hits else pick_indices(n_hits, n_max, seed)
    subset = "all" if len(picked) == n_hits else f"random {len(picked)} of {n_hits}, seed {seed}"
    reference = hull if isinstance(hull, ReferenceHull) else load_hull(hull)
    if relaxer is None:
        engine = "batched" if mlip_available() else "ase"
        relaxer = MLIPRelaxer(model or independent_model(info), engine=engine)
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    mlip_scored = config.get("relax") == "mlip"  # the loop's hits used its MLIP's properties
    # before the relaxations: a missing oracle fails fast; E_hull comes from the recheck's own relaxation
    # against ``hull`` (no second MLIP model relaxing the relaxed cells against the shipped hull)
    oracles = task.build_oracles(skip={"e_above_hull"} - set(task.oracles))
    mlip_props = [p for p in task.properties if p in MLIP_PROPERTIES]
    if not mlip_moduli:
        mlip_props = [p for p in mlip_props if p not in ("bulk_modulus", "shear_modulus")]

    rows, relaxed = [], []
    batched = getattr(relaxer, "engine", "ase") == "batched"
    if batched:  # all hits relaxed at once first; the loop below reads the relaxer's cache
        with tqdm(total=len(picked), desc="recheck: relaxing hits", unit="structure", disable=not progress) as bar:
            relaxer.relax(_structures(hits, picked), on_result=lambda *_: bar.update(1))
    desc = "recheck: re-scoring hits" if batched else "recheck: relaxing hits"
    with tqdm(total=len(picked), desc=desc, unit="structure", disable=not progress) as bar:
        for rank, i in enumerate(picked):
            row, final = _relax_hit(hits.iloc[i], rank, task, relaxer, reference, mlip_props)
            rows.append(row)
            relaxed.append(final)
            bar.update(1)
            bar.set_postfix(failed=sum(s is None for s in relaxed))
    _rescore(rows, relaxed, task, oracles, mlip_props, mlip_scored)
    write_cifs(run_dir / CIF_DIR, rows, relaxed)

    evaluations = int((memory["valid"] == 1).sum())
    result = _summary(rows, n_hits, subset, evaluations, bool(mlip_props))
    result.update(
        run_id=info.get("run_id"),
        task=task.name,
        windows=task.window_text(),
        n_max=n_max,
        seed=int(seed),
        checked_ids=[r["id"] for r in rows],
        evaluations=evaluations,
        evals_per_hit=evaluations / n_hits if n_hits else None,
        stable_threshold=STABLE_THRESHOLD,
        mlip_properties=mlip_props,
        model=relaxer.model,
        survives_on="still_hit_mlip" if mlip_scored and mlip_props else "still_hit",
        hull=reference.source,
        wall_s=round(time.time() - t0, 1),
        hits=rows,
    )
    result = clean(result)
    write_json(run_dir / RECHECK_JSON, result)
    write_csv(run_dir / RECHECK_CSV, rows, task.properties)
    merge_summary(run_dir / SUMMARY, {k: result[k] for k in HEADLINE})
    return result


def rehull_run(run_dir: str | Path, hull: str | Path | ReferenceHull | None = None) -> dict[str, Any]:
    """Recompute E_hull, ``e_hull_le_0.1``, ``survives`` and the headline of an existing recheck against
    ``hull`` from the stored MLIP formation energies: no relaxation (seconds, not minutes per hit).

    For a better hull than the one the recheck used (a newer shipped file, a user's DFT hull). Rewrites
    ``recheck.json``, ``recheck.csv`` and the ``recheck`` block of ``summary.json``; the relaxed CIFs stay.

    Raises:
        FileNotFoundError: the run has no ``recheck.json`` yet.
        ValueError: the task scores ``e_above_hull`` itself (its hit flags depend on the hull: rerun
            :func:`recheck_run`).
    """
    from matinvent.oracles.hull import e_above_hull_with_reason

    run_dir = Path(run_dir)
    path = run_dir / RECHECK_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {RECHECK_JSON}: run 'matinvent recheck {run_dir}' first")
    result = json.loads(path.read_text())
    rows = result.get("hits", [])
    properties = list(rows[0]["original"]) if rows else []
    if "e_above_hull" in properties:
        raise ValueError(f"{path}: task {result.get('task')!r} scores e_above_hull; rerun the full recheck instead")
    reference = hull if isinstance(hull, ReferenceHull) else load_hull(hull)
    for row in rows:
        e_form = row.get("e_form_mlip")
        if e_form is None:
            continue
        e_hull, _ = e_above_hull_with_reason(row["formula"], float(e_form), reference)
        finite = math.isfinite(e_hull)
        row["e_above_hull"] = e_hull if finite else None
        row["e_hull_le_0.1"] = is_stable(e_hull) if finite else None
        if row.get("still_hit") is not None:
            _set_survives(row, result.get("survives_on", "still_hit"))
    result.update(_summary(rows, result["n_hits_distinct"], result["subset"], result["evaluations"],
                           bool(result.get("mlip_properties"))))  # fmt: skip
    result.update(hull=reference.source, hits=rows)
    result = clean(result)
    write_json(path, result)
    write_csv(run_dir / RECHECK_CSV, rows, properties)
    merge_summary(run_dir / SUMMARY, {k: result[k] for k in HEADLINE})
    return result


def headline_table(result: dict[str, Any]) -> str:
    """The headline numbers of a recheck as a two-column text table."""
    lines = []
    for key in HEADLINE:
        value = result.get(key)
        text = "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<30} {text}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- internals


def independent_model(info: dict[str, Any]) -> str:
    """The MLIP that did not relax in the loop of the run ``info`` (``run.json``): CHGNet when the loop relaxed
    every crystal (config ``relax: mlip``, SevenNet-0), else SevenNet-0 (the loop relaxed nothing)."""
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    return "chgnet" if config.get("relax") == "mlip" else "sevennet-0"


def _read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {RUN_FILE} (not a matinvent optimize run?)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(info, dict) or not info.get("task"):
        raise ValueError(f"{path}: no 'task' key")
    return info


def _task(task: str | Path | Task | None, info: dict[str, Any], run_dir: Path) -> Task:
    if isinstance(task, Task):
        return task
    if task is not None:
        return load_task(task)
    try:
        return load_task(info["task"])
    except ConfigError as exc:
        raise ConfigError(
            f"{run_dir / RUN_FILE}: {exc}; for a run on a user task file pass that file (task=, --task)"
        ) from exc


def _relax_hit(
    hit: pd.Series, rank: int, task: Task, relaxer: MLIPRelaxer, hull: ReferenceHull, mlip_props: list[str]
) -> tuple[dict[str, Any], Any]:
    """One checked hit's row (re-scoring filled in later) and its relaxed structure (None on failure)."""
    try:
        structure = Crystal.from_cif(hit["cif"]).to_structure()
    except Exception as exc:  # noqa: BLE001 - one bad record never stops the recheck
        stab, final = empty_row(rank, None), None
        stab["stability_reason"] = f"CIF: {type(exc).__name__}: {exc}"
    else:
        try:
            stab, final = measure_structure(structure, rank, relaxer, hull)
        except Exception as exc:  # noqa: BLE001
            stab, final = empty_row(rank, structure), None
            stab["stability_reason"] = f"{type(exc).__name__}: {exc}"
    mlip = dict.fromkeys(mlip_props, math.nan)
    if final is not None:
        for prop in mlip_props:  # the relaxer's cache holds the relaxation (and E_form) already
            if prop == "e_above_hull" and prop not in task.oracles:  # the recheck's hull, as measured above
                mlip[prop] = stab["e_above_hull"]
                continue
            try:
                mlip[prop] = float(getattr(relaxer, prop)([structure])[0])
            except Exception as exc:  # noqa: BLE001
                stab["stability_reason"] = "; ".join(filter(None, [stab["stability_reason"], f"{prop}: {exc}"]))
    row = {
        "rank": rank,
        "id": int(hit["id"]),
        "iteration": int(hit["iteration"]),
        "idx": int(hit["idx"]),
        "formula": hit["formula"],
        "reward": float(hit["reward"]),
        "original": {p: _float(hit[p]) for p in task.properties},
        "relaxed": dict.fromkeys(task.properties, math.nan),
        "mlip": mlip,
        "reward_relaxed": math.nan,
        "e_form_mlip": stab["e_form"],
        "e_above_hull": stab["e_above_hull"],
        "e_hull_le_0.1": stab["stable"],
        "still_hit": None,
        "still_hit_mlip": None,
        "survives": False if final is None else None,
        "rmsd": stab["rmsd"],
        "relax_converged": stab["relax_converged"],
        "relax_steps": stab["relax_steps"],
        "cif": None,
        "reason": stab["stability_reason"],
    }
    return row, final


def _rescore(
    rows: list[dict[str, Any]],
    relaxed: list[Any],
    task: Task,
    oracles: dict[str, Any],
    mlip_props: list[str],
    mlip_scored: bool = False,
) -> None:
    """Fill in the task oracles' values, reward and hit flags on the relaxed structures (in place)."""
    ok = [i for i, s in enumerate(relaxed) if s is not None]
    if not ok:
        return
    values = {}
    for prop, oracle in oracles.items():
        values[prop] = np.asarray(oracle([relaxed[i] for i in ok]), dtype=np.float64)
    if "e_above_hull" in task.properties and "e_above_hull" not in oracles:
        values["e_above_hull"] = np.array([_float(rows[i]["e_above_hull"]) for i in ok], dtype=np.float64)
    reward, hit, _ = task.rewards(values)
    if mlip_props:
        mixed = {p: np.array([rows[i]["mlip"].get(p, math.nan) for i in ok]) for p in mlip_props}
        hit_mlip = task.rewards({**values, **mixed})[1]
    for k, i in enumerate(ok):
        row = rows[i]
        row["relaxed"] = {p: float(values[p][k]) for p in task.properties}
        row["reward_relaxed"] = float(reward[k])
        row["still_hit"] = bool(hit[k])
        row["still_hit_mlip"] = bool(hit_mlip[k]) if mlip_props else None
        _set_survives(row, "still_hit_mlip" if mlip_scored and mlip_props else "still_hit")


def _set_survives(row: dict[str, Any], on: str = "still_hit") -> None:
    """A re-scored hit survives when it is still a hit (``on``) and within the stability threshold of the hull."""
    row["survives"] = bool(row[on]) and row["e_hull_le_0.1"] is True


def _structures(hits: pd.DataFrame, picked: list[int]) -> list[Any]:
    """The generated structures of the picked hits (None where the CIF cannot be read)."""
    out = []
    for i in picked:
        try:
            out.append(Crystal.from_cif(hits.iloc[i]["cif"]).to_structure())
        except Exception:  # noqa: BLE001 - _relax_hit reports it
            out.append(None)
    return out


def _summary(rows: list[dict[str, Any]], n_hits: int, subset: str, evaluations: int, mlip: bool) -> dict[str, Any]:
    n = len(rows)
    e_hull = np.array([r["e_above_hull"] for r in rows], dtype=np.float64)
    e_hull = e_hull[np.isfinite(e_hull)]
    frac_survive = _fraction(rows, "survives")
    burden = None
    if n and frac_survive > 0:
        burden = evaluations / (n_hits * frac_survive)
    return {
        "n_hits_distinct": n_hits,
        "n_checked": n,
        "subset": subset,
        "n_failed": sum(r["still_hit"] is None for r in rows),
        "frac_still_hit": _fraction(rows, "still_hit"),
        "frac_still_hit_mlip": _fraction(rows, "still_hit_mlip") if mlip else None,
        "mean_e_above_hull": float(e_hull.mean()) if len(e_hull) else None,
        "median_e_above_hull": float(np.median(e_hull)) if len(e_hull) else None,
        "frac_e_hull_le_0.1": _fraction(rows, "e_hull_le_0.1"),
        "n_far_below_hull": int((e_hull < FAR_BELOW_HULL).sum()),  # hull gaps or MLIP errors, not discoveries
        "frac_survive": frac_survive,
        "n_survive": sum(r["survives"] is True for r in rows),
        "burden_rechecked": burden,  # evaluations per surviving hit
        "burden_rechecked_is_estimate": subset != "all",
    }


def _fraction(rows: list[dict[str, Any]], key: str) -> float | None:
    return sum(r[key] is True for r in rows) / len(rows) if rows else None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
