"""Writing the hostile inputs of a fuzz run to disk, one case per input, seeded and deterministic.

Case ``i`` of a kind depends only on ``(seed, kind, i)``, so ``--n`` scales a run without changing
the cases a smaller run had. Structure cases alternate ``matinvent score`` (``mode: cli``) and the
library (``read_structure_items`` + ``Scorer``), and the tasks ``density`` and ``hhi``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from fuzz.checks import reference_value, structure_violation
from fuzz.cif import model_of, mutate
from fuzz.folders import damage_prior, damage_run, make_base
from fuzz.settings import pretrain_config_case, rl_config_case, task_case
from fuzz.tables import csv_case, extxyz_case

SHARES = {
    "cif": 0.40,
    "extxyz": 0.10,
    "csv": 0.10,
    "rl_config": 0.12,
    "pretrain_config": 0.06,
    "task": 0.10,
    "run_folder": 0.08,
    "prior_folder": 0.04,
}
KINDS = tuple(SHARES)


def base_structures(data_csv: Path) -> list:
    """Textbook crystals and the MP-20 fixture's, keeping those the independent checks call plausible."""
    import warnings

    import pandas as pd
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifParser

    out = [
        Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(
            Lattice.cubic(3.905),
            ["Sr", "Ti", "O", "O", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
        Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for text in pd.read_csv(data_csv)["cif"]:
            out.append(CifParser.from_str(text).parse_structures(primitive=False)[0])
    return [s for s in out if not structure_violation(s)]


def counts(n: int) -> dict[str, int]:
    c = {k: int(n * share) for k, share in SHARES.items()}
    c["cif"] += n - sum(c.values())
    return c


def _rng(seed: int, kind: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, KINDS.index(kind), i])


def _write(path: Path, data: str | bytes) -> None:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape"))


def generate(workdir: Path, n: int, seed: int) -> list[dict]:
    """Write ``n`` cases under ``workdir/cases`` (and the shared base under ``workdir/base``); their specs."""
    root = Path(__file__).parents[2]
    base, cases_dir = workdir / "base", workdir / "cases"
    make_base(base)
    bases = base_structures(root / "tests" / "data" / "mp20_sample.csv")
    good = base / "good"
    good.mkdir()
    from pymatgen.io.cif import CifWriter

    for name, s in zip(("a", "b", "c"), bases[:3], strict=True):
        (good / f"{name}.cif").write_text(str(CifWriter(s)))
    if cases_dir.exists():
        shutil.rmtree(cases_dir)
    cases = []
    for kind, k in counts(n).items():
        (cases_dir / kind).mkdir(parents=True)
        for i in range(k):
            rng = _rng(seed, kind, i)
            case = {"id": len(cases), "kind": kind, "mode": "cli" if i % 2 == 0 else "lib", "base": str(base)}
            case["task"] = "density" if i // 2 % 2 == 0 else "hhi"
            case.update(_build(kind, rng, cases_dir / kind / f"{i:05d}", bases, base, case["task"]))
            cases.append(case)
    return cases


def _build(kind: str, rng: np.random.Generator, stem: Path, bases: list, base: Path, task: str) -> dict:
    """Write one case's input at ``stem`` (+ suffix or as a folder); its path, mutation, label and expectations."""
    if kind == "cif":
        stem.mkdir()
        n_bad = 1 if rng.random() < 0.8 else 2
        names = sorted(rng.choice(["a", "b", "c"], size=n_bad + 1, replace=False).tolist())
        good_name, bad_names = names[0 if rng.random() < 0.5 else -1], [x for x in names]
        bad_names.remove(good_name)
        good_s = bases[0]
        from pymatgen.io.cif import CifWriter

        (stem / f"{good_name}_good.cif").write_text(str(CifWriter(good_s)))
        labels, muts = {}, []
        for b in bad_names:
            s = bases[int(rng.integers(len(bases)))]
            mut, data, label = mutate(rng, model_of(s, f"x{b}"))
            _write(stem / f"{b}_hostile.cif", data)
            labels[f"{b}_hostile"] = label
            muts.append(mut)
        exp = {
            "rows": n_bad + 1,
            "min_rows": n_bad + 1,
            "labels": labels,
            "good": {f"{good_name}_good": reference_value(good_s, task)},
        }
        return {"path": str(stem), "mutation": "+".join(muts), "label": "/".join(labels.values()), "exp": exp}
    if kind in ("extxyz", "csv"):
        if kind == "extxyz":
            mut, data, exp = extxyz_case(rng, bases)
            path = stem.with_suffix(".extxyz")
        else:
            mut, suffix, data, exp = csv_case(rng, bases)
            path = stem.with_name(stem.name + suffix)
        _write(path, data)
        exp["good"] = {key: reference_value(s, task) for key, s in exp["good"].items()}
        exp.setdefault("labels", {})
        return {"path": str(path), "mutation": mut, "label": "/".join(exp["labels"].values()) or "-", "exp": exp}
    if kind in ("rl_config", "pretrain_config", "task"):
        mut, data, label = {"rl_config": rl_config_case, "pretrain_config": pretrain_config_case, "task": task_case}[
            kind
        ](rng)
        path = stem.with_suffix(".yaml")
        _write(path, data)
        return {"path": str(path), "mutation": mut, "label": label}
    if kind == "run_folder":
        shutil.copytree(base / "run", stem)
        mut, label, opts = damage_run(rng, stem)
        return {"path": str(stem), "mutation": mut, "label": label, "opts": opts}
    shutil.copytree(base / "prior", stem)
    mut, label = damage_prior(rng, stem)
    return {"path": str(stem), "mutation": mut, "label": label}
