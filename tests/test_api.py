"""The Python API (``import matinvent as mi``): light import, version, sampling, scoring, optimize, and
oracles taking pymatgen ``Structure``, ASE ``Atoms`` and ``Crystal`` alike."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_utils import save_tiny_checkpoint
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

import matinvent as mi
from matinvent.config_io import ConfigError
from matinvent.crystal.record import Crystal
from matinvent.io.cdvae_csv import read_cdvae_csv
from matinvent.oracles import HHI, Density, Oracle, as_structures
from matinvent.scoring.tasks import Task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mp20_structures(data_dir) -> list[Structure]:
    """Eight real MP-20 crystals (physically valid), with fractional coordinates in [0, 1)."""
    return [c.to_structure() for c in read_cdvae_csv(data_dir / "mp20_sample.csv").crystals[:8]]


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", natoms=range(2, 9))


def _three_kinds(structures: list[Structure]) -> dict[str, list]:
    return {
        "structure": structures,
        "atoms": [AseAtomsAdaptor.get_atoms(s) for s in structures],
        "crystal": [Crystal.from_structure(s) for s in structures],
    }


# ----------------------------------------------------------------------------------- the package


def test_import_is_light_and_the_version_is_the_installed_one():
    code = "import sys, matinvent as mi; print(mi.__version__); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [version("matinvent"), "False"]
    assert mi.__version__ == version("matinvent")
    assert {"load_prior", "score", "optimize", "load_task", "tasks"} <= set(dir(mi))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mi.nope  # noqa: B018


def test_tasks_and_load_task():
    names = mi.tasks()
    assert {"density", "hhi", "band_gap", "T1"} <= set(names)
    task = mi.load_task("density")
    assert isinstance(task, Task) and task.properties == ["density"]
    assert mi.load_task(task) is task
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        mi.load_task("nope")


# ----------------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("oracle", [Density(), HHI()], ids=["density", "hhi"])
def test_structure_oracles_give_identical_values_for_structure_atoms_and_crystal(oracle, mp20_structures):
    values = {kind: oracle(items) for kind, items in _three_kinds(mp20_structures).items()}
    assert np.isfinite(values["structure"]).sum() >= 7  # HHI has no data for one element of one crystal
    np.testing.assert_array_equal(values["atoms"], values["structure"])
    np.testing.assert_array_equal(values["crystal"], values["structure"])


def test_cgcnn_oracle_gives_the_same_values_for_structure_atoms_and_crystal(mp20_structures):
    from matinvent.oracles.cgcnn import CGCNNFormationEnergy

    oracle = CGCNNFormationEnergy()
    values = {kind: oracle(items) for kind, items in _three_kinds(mp20_structures).items()}
    assert np.isfinite(values["structure"]).all() and np.ptp(values["structure"]) > 0.1
    # Atoms go through Cartesian positions (round-off ~1e-15 Å); a Crystal keeps the exact coordinates
    np.testing.assert_allclose(values["atoms"], values["structure"], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(values["crystal"], values["structure"])


def test_a_failing_oracle_on_atoms_gives_nan_instead_of_raising_in_its_error_handler(mp20_structures):
    class Broken(Oracle):
        name = "broken"

        def evaluate(self, structures):
            raise RuntimeError("always fails")

    atoms = [AseAtomsAdaptor.get_atoms(s) for s in mp20_structures[:3]]
    assert np.isnan(Broken()(atoms)).all()


def test_atoms_without_a_cell_become_nan_and_other_types_are_refused(mp20_structures):
    from ase import Atoms

    molecule = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    out = Density()([molecule, AseAtomsAdaptor.get_atoms(mp20_structures[0])])
    assert np.isnan(out[0]) and out[1] == pytest.approx(mp20_structures[0].density)
    assert as_structures([None, mp20_structures[0]])[0] is None
    with pytest.raises(TypeError, match="structure 1: expected a pymatgen Structure.*got str"):
        as_structures([mp20_structures[0], "NaCl.cif"])


# ----------------------------------------------------------------------------------- score


def test_score_accepts_structures_atoms_crystals_one_structure_and_a_path(mp20_structures, tmp_path):
    tables = {kind: mi.score(items, "density", relax="none") for kind, items in _three_kinds(mp20_structures).items()}
    ref = tables["structure"]
    assert list(ref.columns) == ["id", "formula", "density", "reward", "hit", "valid", "reason"]
    assert list(ref["id"]) == [str(i) for i in range(8)] and ref["valid"].all()
    np.testing.assert_allclose(ref["density"], [s.density for s in mp20_structures], rtol=1e-12)
    for kind in ("atoms", "crystal"):
        pd.testing.assert_frame_equal(tables[kind], ref)
    single = mi.score(mp20_structures[2], mi.load_task("density"), relax="none")
    assert len(single) == 1 and single["density"].iloc[0] == ref["density"].iloc[2]
    for i, s in enumerate(mp20_structures):
        Crystal.from_structure(s).write_cif(tmp_path / f"s{i}.cif")
    from_path = mi.score(tmp_path, "density", relax="none")
    assert list(from_path["id"]) == [f"s{i}" for i in range(8)]
    np.testing.assert_allclose(from_path["density"], ref["density"], rtol=1e-9)


def test_score_names_a_bad_item_and_a_missing_path(tmp_path):
    with pytest.raises(TypeError, match="structure 0: .*got int"):
        mi.score([1], "density")
    with pytest.raises(FileNotFoundError, match="no-such"):
        mi.score(tmp_path / "no-such", "density")


# ----------------------------------------------------------------------------------- priors


def test_prior_samples_structures_reproducibly_under_constraints(tiny_prior):
    prior = mi.load_prior(tiny_prior)
    assert prior.path == tiny_prior and "tiny" in repr(prior)
    first = prior.sample(6, seed=3, steps=4)
    assert len(first) == 6 and all(isinstance(s, Structure) for s in first)
    again = prior.sample(6, seed=3, steps=4)
    for a, b in zip(first, again, strict=True):
        assert np.allclose(a.lattice.matrix, b.lattice.matrix) and a.species == b.species
    rules = {"exclude": ["O", "H"], "natoms": [3, 4], "max_elements": 2}
    constrained = prior.sample(6, seed=3, steps=4, constraints=rules)
    assert len(constrained) == 6
    for s in constrained:
        symbols = {el.symbol for el in s.composition.elements}
        assert 3 <= len(s) <= 4 and len(symbols) <= 2 and not symbols & {"O", "H"}


def test_load_prior_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a matinvent checkpoint"):
        mi.load_prior(tmp_path)


def test_optimize_refuses_an_unknown_config_key_before_touching_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="no_such_key"):
        mi.optimize("density", budget=4, out=tmp_path / "run", no_such_key=1)
    with pytest.raises(ConfigError, match="batch_size"):
        mi.optimize("density", budget=4, out=tmp_path / "run", batch_size=0)
    assert not (tmp_path / "run").exists()


def test_optimize_returns_the_run_with_its_memory_hits_and_agent(tiny_prior, tmp_path):
    from matinvent.scoring.tasks import task_from_dict

    wide = {"name": "any_density", "properties": {"density": {"target": "range", "center": 50, "tolerance": 50}}}
    prior = mi.load_prior(tiny_prior)
    run = mi.optimize(
        task_from_dict(wide), budget=6, out=tmp_path / "run", seed=1, prior=prior, batch_size=6, sample_steps=2,
        validity="none", recheck_n=0, progress=False, relax="none",
    )  # fmt: skip
    assert run.path == tmp_path / "run" and run.summary["evaluations"] >= 6 and run.summary["finished"]
    memory = run.memory()
    assert len(memory) == run.summary["samples"] and memory["run_id"].nunique() == 1
    hits = run.hits()  # every crystal is a hit in this window: one per formula, with its structure
    assert len(hits) == memory[memory["hit"] == 1]["formula"].nunique() > 0
    for formula, structure in zip(hits["formula"], hits["structure"], strict=True):
        assert isinstance(structure, Structure) and structure.composition.reduced_formula == formula
    agent = run.agent()
    assert agent.path == tmp_path / "run" / "agent" and len(agent.sample(2, seed=0, steps=2)) == 2
    with pytest.raises(FileExistsError, match="already holds a run"):
        mi.optimize("density", budget=6, out=tmp_path / "run", prior=prior, recheck_n=0, progress=False, relax="none")


# ----------------------------------------------------------------------------------- the README example


def _python_block(path: Path, heading: str | None = None) -> str:
    """The first python code block of ``path`` (under the ``## heading`` section when given)."""
    text = path.read_text()
    if heading is not None:
        section = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        assert section, f"no '## {heading}' section in {path.name}"
        text = section.group(1)
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, f"no python code block in {path.name}"
    return block.group(1)


def _from_python_example() -> str:
    """The full example of docs/python-api.md (the README shows a shorter one and links to it; no text twice)."""
    return _python_block(ROOT / "docs" / "python-api.md")


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _python_block(ROOT / "README.md", "Python")
    exec(compile(code, "README Python example", "exec"), {"__name__": "__readme__"})  # noqa: S102
    summary = json.loads((tmp_path / "runs" / "hhi" / "summary.json").read_text())
    assert summary["finished"] and summary["evaluations"] >= 16 and summary["task"] == "hhi"
    assert str(summary["hits"]) in capsys.readouterr().out


def test_the_from_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _from_python_example()
    exec(compile(code, "From Python example", "exec"), {"__name__": "__from_python__"})  # noqa: S102
    out = capsys.readouterr().out
    assert mi.__version__ in out and "evaluations," in out
    summary = json.loads((tmp_path / "runs" / "from_python" / "summary.json").read_text())
    assert summary["finished"] and summary["evaluations"] >= 16 and summary["task"] == "hhi"
