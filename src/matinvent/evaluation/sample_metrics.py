"""Quality metrics of generated crystals (``matinvent evaluate``).

Per crystal (``Evaluation.rows``; ``--save-detailed``): physical validity (covalent-radius
contacts + density window, :mod:`matinvent.crystal.validity`), CDVAE structure validity (all distances
≥ 0.5 Å, volume ≥ 0.1 Å³), SMACT composition validity, why any of them fails, and whether the
crystal is unique and novel. Over the set (fractions of all generated crystals unless stated):

- ``validity``: the gate (``physical``, the default, or ``cdvae``) and composition validity;
  the crystals passing both are *the valid set* used by novelty and the distances to the reference;
- uniqueness: distinct structures (pymatgen ``StructureMatcher``) / generated;
- novelty: unique valid structures that match no reference structure / unique valid;
- distinct elements per crystal: histogram 1..max, the fractions with exactly one (elemental)
  and exactly two (binary) elements and with more than 5, of the readable crystals (what the
  generator makes, before any gate), and the same for the reference;
- Wasserstein distances of density (g/cm³) and number of elements, valid set vs reference;
- ``element_freq_distance``: total-variation distance between the element frequencies (share of
  crystals containing each element, normalised to sum 1:
  :func:`~matinvent.evaluation.distributions.element_frequencies`), valid set vs reference;
- stability (:func:`add_stability`, optional): ``matinvent.evaluation.stability.stability_metrics`` on a
  seeded random subset of the physically valid crystals.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from matinvent.crystal.record import Crystal
from matinvent.crystal.validity import (
    cdvae_validity,
    composition_valid,
    composition_validity,
    physical_validity,
    structure_valid,
)
from matinvent.evaluation.distributions import (
    MANY_ELEMENTS,
    density,
    element_freq_distance,
    fraction_above,
    fraction_equal,
    n_elements_histogram,
    num_elements,
    wasserstein,
)
from matinvent.evaluation.matching import novel_mask, unique_indices
from matinvent.io.sample_folder import read_sample_folder

EVALUATION_GATES = ("physical", "cdvae")

__all__ = [  # composition_valid, structure_valid, density, num_elements: re-exported from their modules
    "EVALUATION_GATES",
    "Evaluation",
    "add_stability",
    "composition_valid",
    "density",
    "evaluate_crystals",
    "load_sample_dir",
    "num_elements",
    "stability_function",
    "structure_valid",
    "write_detailed",
]


@dataclass
class Evaluation:
    """Set metrics (fractions of all generated crystals unless stated) and one row per crystal."""

    n_generated: int
    n_readable: int
    validity_gate: str  # physical | cdvae: with composition validity, defines the valid set
    physical_validity: float
    structure_validity: float  # CDVAE: distances ≥ 0.5 Å
    composition_validity: float
    validity: float
    uniqueness: float
    frac_over_5_elements: float | None = None  # of readable crystals
    frac_single_element: float | None = None  # of readable crystals: exactly one element
    frac_binary: float | None = None  # of readable crystals: exactly two elements
    n_elements_histogram: dict[str, int] = field(default_factory=dict)  # readable crystals with k elements
    novelty: float | None = None
    wdist_density: float | None = None
    wdist_num_elements: float | None = None
    element_freq_distance: float | None = None  # total variation, valid set vs reference, in [0, 1]
    n_reference: int | None = None
    reference_frac_single_element: float | None = None
    reference_frac_binary: float | None = None
    reference_n_elements_histogram: dict[str, int] | None = None
    stability: dict[str, Any] | None = None  # summary of matinvent.evaluation.stability.stability_metrics
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """All set metrics (no rows), JSON-ready (non-finite floats → ``None``)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "rows"}

    def table(self) -> str:
        items: list[tuple[str, Any]] = []
        for k, v in self.to_dict().items():
            if v is None:
                continue
            if k == "stability":
                items.extend((f"stability.{sk}", sv) for sk, sv in v.items() if sv is not None)
            elif isinstance(v, dict):
                items.append((k, " ".join(f"{n}:{c}" for n, c in v.items())))
            else:
                items.append((k, v))
        width = max(len(k) for k, _ in items)
        lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
        for k, v in items:
            lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
        return "\n".join(lines)


def _jsonable(v: Any) -> Any:
    """Non-finite floats → ``None``, numpy scalars → Python, paths → text (recursively in dicts)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _formula(c: Crystal) -> str:
    with warnings.catch_warnings():  # pymatgen warns about elements lacking electronegativities
        warnings.simplefilter("ignore")
        return c.formula


def evaluate_crystals(
    crystals: list[Crystal | None],
    reference: list[Crystal] | None = None,
    progress: bool = False,
    validity: str = "physical",
    ids: list[str] | None = None,
    errors: dict[int, str] | None = None,
) -> Evaluation:
    """Metrics over ``crystals`` (``None`` = a sample that could not be built or read: invalid).

    ``validity`` (``physical`` | ``cdvae``) chooses the geometric check of the valid set; ``ids``
    name the rows (default: positions); ``errors`` give the reason of a ``None`` entry.
    """
    from tqdm import tqdm

    if validity not in EVALUATION_GATES:
        raise ValueError(f"unknown validity '{validity}' (choose from: {', '.join(EVALUATION_GATES)})")
    n = len(crystals)
    if n == 0:
        raise ValueError("no crystals to evaluate")
    ids = ids if ids is not None else [f"{i:06d}" for i in range(n)]
    errors = errors or {}
    checks = [
        (physical_validity(c), cdvae_validity(c), composition_validity(c))
        for c in tqdm(crystals, desc="validity", disable=not progress)
    ]
    phys = [p[0] for p, _, _ in checks]
    cdvae = [s[0] for _, s, _ in checks]
    comp = [c[0] for _, _, c in checks]
    gate = phys if validity == "physical" else cdvae
    valid = [g and c for g, c in zip(gate, comp, strict=True)]
    readable_idx = [i for i, c in enumerate(crystals) if c is not None]
    unique = {readable_idx[k] for k in unique_indices([crystals[i] for i in readable_idx])} if readable_idx else set()
    counts = {i: num_elements(crystals[i]) for i in readable_idx}
    rho = {i: density(crystals[i]) for i in readable_idx}
    ev = Evaluation(
        n_generated=n,
        n_readable=len(readable_idx),
        validity_gate=validity,
        physical_validity=sum(phys) / n,
        structure_validity=sum(cdvae) / n,
        composition_validity=sum(comp) / n,
        validity=sum(valid) / n,
        uniqueness=len(unique) / n,
        frac_over_5_elements=fraction_above(list(counts.values()), MANY_ELEMENTS),
        frac_single_element=fraction_equal(list(counts.values()), 1),
        frac_binary=fraction_equal(list(counts.values()), 2),
        n_elements_histogram=n_elements_histogram(list(counts.values())),
    )
    valid_idx = [i for i in range(n) if valid[i]]
    novel: dict[int, bool] = {}
    if reference:
        ev.n_reference = len(reference)
        ref_counts = [num_elements(r) for r in reference]
        ev.reference_n_elements_histogram = n_elements_histogram(ref_counts)
        ev.reference_frac_single_element = fraction_equal(ref_counts, 1)
        ev.reference_frac_binary = fraction_equal(ref_counts, 2)
        novel = dict(zip(valid_idx, novel_mask([crystals[i] for i in valid_idx], reference), strict=True))
        valid_unique = [i for i in valid_idx if i in unique]
        if valid_unique:
            ev.novelty = sum(novel[i] for i in valid_unique) / len(valid_unique)
        ev.wdist_density = wasserstein([rho[i] for i in valid_idx], [density(r) for r in reference])
        ev.wdist_num_elements = wasserstein([counts[i] for i in valid_idx], ref_counts)
        ev.element_freq_distance = element_freq_distance([crystals[i] for i in valid_idx], reference)
    for i, c in enumerate(crystals):
        if c is None:
            reason = errors.get(i, checks[i][0][1])
        else:
            named = zip(("physical", "cdvae", "composition"), checks[i], strict=True)
            reason = "; ".join(f"{name}: {why}" for name, (ok, why) in named if not ok)
        ev.rows.append(
            {
                "id": ids[i],
                "formula": _formula(c) if c is not None else "",
                "n_atoms": c.num_atoms if c is not None else None,
                "n_elements": counts.get(i),
                "density": rho.get(i),
                "physical_valid": phys[i],
                "structure_valid": cdvae[i],
                "composition_valid": comp[i],
                "valid": valid[i],
                "reason": reason,
                "unique": i in unique,
                "novel": novel.get(i),
            }
        )
    return ev


def stability_function():
    """``stability_metrics`` (:mod:`matinvent.evaluation.stability`); ``RuntimeError`` naming the problem if missing."""
    try:
        from matinvent.evaluation.stability import stability_metrics
    except ImportError as exc:
        raise RuntimeError(f"--stability needs matinvent.evaluation.stability.stability_metrics: {exc}") from exc
    return stability_metrics


def add_stability(
    ev: Evaluation,
    crystals: list[Crystal | None],
    n: int,
    seed: int = 0,
    hull: str | Path | None = None,
    training: list[Any] | None = None,
    progress: bool = True,
    engine: str = "auto",
) -> list[int]:
    """``stability_metrics`` on ≤ ``n`` of the physically valid crystals (it draws them with ``seed``).

    ``engine``: how SevenNet-0 relaxes them: ``ase`` (one at a time), ``batched`` (all at once, torch-sim) or
    ``auto`` (batched when torch-sim is installed).

    The summary goes to ``ev.stability``; each per-structure row's columns (all but ``index``,
    the position in the list passed) join that crystal's row in ``ev.rows``, prefixed
    ``stability_`` where the name is taken. Returns the indices (into ``crystals``) measured.
    """
    if n < 1:
        raise ValueError(f"--stability-n must be >= 1, got {n}")
    stability_metrics = stability_function()
    candidates = [i for i, r in enumerate(ev.rows) if r["physical_valid"]]
    if not candidates:
        ev.stability = {"n_requested": n, "n_selected": 0}
        return []
    structures = [crystals[i].to_structure() for i in candidates]
    from matinvent.oracles.mlip import MLIPRelaxer
    from matinvent.oracles.mlip.calculators import mlip_available

    if engine == "auto":
        engine = "batched" if mlip_available() else "ase"

    relaxer = MLIPRelaxer("sevennet-0", engine=engine)
    summary, rows = stability_metrics(
        structures, n=n, seed=seed, hull=hull, training=training, progress=progress, relaxer=relaxer
    )
    summary["engine"] = engine
    ev.stability = dict(summary)
    taken = set(ev.rows[0])
    measured = []
    for r in rows:
        i = candidates[int(r["index"])]
        measured.append(i)
        for k, v in r.items():
            if k != "index":
                ev.rows[i][f"stability_{k}" if k in taken else k] = v
    return measured


def write_detailed(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """One CSV row per crystal (columns: the union of the rows' keys, in order of appearance)."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def load_sample_dir(directory: str | Path) -> list[Crystal | None]:
    """Crystals of a sample folder (``matinvent.io.sample_folder.read_sample_folder``; refuses mixed runs)."""
    return read_sample_folder(directory).crystals
