"""Quality metrics of generated crystals (CDVAE/DiffCSP conventions).

- structure validity: every interatomic distance ≥ 0.5 Å under periodic boundaries
  (minimum image, self-images excluded) and volume ≥ 0.1 Å³;
- composition validity: SMACT charge neutrality + electronegativity (``smact_validity``);
- uniqueness: distinct structures (pymatgen ``StructureMatcher``) / generated;
- novelty: unique valid structures that match no reference structure / unique valid;
- Wasserstein distances of density (g/cm³) and number of elements against a reference set.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from matinvent.crystal import Crystal, CrystalError

MIN_DISTANCE = 0.5
MIN_VOLUME = 0.1
# SMACT enumerates oxidation-state combinations, exponential in the number of elements
# (45 s for a 12-element formula). MP-20 has no material with more than 7 distinct elements;
# compositions above this many elements are reported invalid without running SMACT.
MAX_SMACT_ELEMENTS = 8


def structure_valid(
    crystal: Crystal | None, min_distance: float = MIN_DISTANCE, min_volume: float = MIN_VOLUME
) -> bool:
    """All pairwise distances ≥ ``min_distance`` Å (periodic) and volume ≥ ``min_volume`` Å³."""
    if crystal is None or crystal.volume < min_volume:
        return False
    if crystal.num_atoms == 1:
        return True
    dm = crystal.to_structure().distance_matrix
    np.fill_diagonal(dm, np.inf)
    return bool(dm.min() >= min_distance)


def composition_valid(crystal: Crystal | None) -> bool:
    """SMACT charge neutrality and Pauling electronegativity test (pure metals/alloys pass)."""
    if crystal is None or num_elements(crystal) > MAX_SMACT_ELEMENTS:
        return False
    from smact.screening import smact_validity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(smact_validity(crystal.to_structure().composition))
        except Exception:  # smact lacks data for some elements
            return False


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)


def unique_indices(crystals: list[Crystal]) -> list[int]:
    """Indices of one representative per group of matching structures (same reduced formula first)."""
    matcher = _matcher()
    by_formula: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(crystals):
        by_formula[c.formula].append(i)
    keep = []
    for idx in by_formula.values():
        reps: list[int] = []
        for i in idx:
            s = crystals[i].to_structure()
            if not any(matcher.fit(s, crystals[j].to_structure()) for j in reps):
                reps.append(i)
        keep.extend(reps)
    return sorted(keep)


def novel_mask(crystals: list[Crystal], reference: list[Crystal]) -> list[bool]:
    """True where a crystal matches no reference structure of the same reduced formula."""
    matcher = _matcher()
    ref: dict[str, list[Crystal]] = defaultdict(list)
    for r in reference:
        ref[r.formula].append(r)
    out = []
    for c in crystals:
        s = c.to_structure()
        out.append(not any(matcher.fit(s, r.to_structure()) for r in ref.get(c.formula, [])))
    return out


def density(crystal: Crystal) -> float:
    return float(crystal.to_structure().density)


def num_elements(crystal: Crystal) -> int:
    return len(set(crystal.Z.tolist()))


@dataclass
class Evaluation:
    """Fractions are of all generated crystals unless stated."""

    n_generated: int
    n_readable: int
    structure_validity: float
    composition_validity: float
    validity: float
    uniqueness: float
    novelty: float | None = None
    wdist_density: float | None = None
    wdist_num_elements: float | None = None
    n_reference: int | None = None

    def table(self) -> str:
        rows = [(k, v) for k, v in asdict(self).items() if v is not None]
        width = max(len(k) for k, _ in rows)
        lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
        for k, v in rows:
            lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
        return "\n".join(lines)


def evaluate_crystals(
    crystals: list[Crystal | None], reference: list[Crystal] | None = None, progress: bool = False
) -> Evaluation:
    """Metrics over ``crystals`` (``None`` = a sample that could not be built: invalid)."""
    from scipy.stats import wasserstein_distance
    from tqdm import tqdm

    n = len(crystals)
    if n == 0:
        raise ValueError("no crystals to evaluate")
    it = tqdm(crystals, desc="validity", disable=not progress)
    s_valid = [structure_valid(c) for c in it]
    c_valid = [composition_valid(c) for c in crystals]
    readable_idx = [i for i, c in enumerate(crystals) if c is not None]
    readable = [crystals[i] for i in readable_idx]
    uniq = unique_indices(readable) if readable else []
    ev = Evaluation(
        n_generated=n,
        n_readable=len(readable),
        structure_validity=sum(s_valid) / n,
        composition_validity=sum(c_valid) / n,
        validity=sum(a and b for a, b in zip(s_valid, c_valid, strict=True)) / n,
        uniqueness=len(uniq) / n,
    )
    valid = [c for c, a, b in zip(crystals, s_valid, c_valid, strict=True) if a and b]
    if reference:
        ev.n_reference = len(reference)
        valid_unique = [readable[i] for i in uniq if s_valid[readable_idx[i]] and c_valid[readable_idx[i]]]
        if valid_unique:
            ev.novelty = sum(novel_mask(valid_unique, reference)) / len(valid_unique)
        if valid:
            ev.wdist_density = float(wasserstein_distance([density(c) for c in valid], [density(r) for r in reference]))
            ev.wdist_num_elements = float(
                wasserstein_distance([num_elements(c) for c in valid], [num_elements(r) for r in reference])
            )
    for k in ("wdist_density", "wdist_num_elements", "novelty"):
        v = getattr(ev, k)
        if v is not None and not math.isfinite(v):
            setattr(ev, k, None)
    return ev


def load_sample_dir(directory: str | Path) -> list[Crystal | None]:
    """Crystals of a ``matinvent sample`` folder; samples that failed to build count as ``None``.

    Reads every ``*.cif`` (sorted). When ``sample_info.json`` lists failed samples they are
    appended as ``None`` so that validity is a fraction of all requested samples.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"not a folder: {directory}")
    files = sorted(directory.glob("*.cif"))
    out: list[Crystal | None] = []
    for f in files:
        try:
            out.append(Crystal.read_cif(f))
        except CrystalError as exc:
            warnings.warn(str(exc), stacklevel=2)
            out.append(None)
    info = directory / "sample_info.json"
    if info.exists():
        out.extend([None] * len(json.loads(info.read_text()).get("failed", [])))
    if not out:
        raise FileNotFoundError(f"no CIF files in {directory}")
    return out
