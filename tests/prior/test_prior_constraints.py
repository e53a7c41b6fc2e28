"""A prior fine-tuned under chemical-space constraints keeps them: ``sample``, the API and ``optimize`` apply them,
``save-prior`` carries them on, and a damaged entry is named."""

from __future__ import annotations

import json

import pytest
from model_utils import save_tiny_masked_prior
from pymatgen.core import Structure
from rl_toy import LightFraction

from matinvent.api import load_prior as api_load_prior
from matinvent.cli import main
from matinvent.config_io import ConfigError
from matinvent.crystal.constraints import ChemConstraints
from matinvent.prior.checkpoint import CONFIG, TRAINED_UNDER, prior_constraints
from matinvent.rl import RLConfig, optimize
from matinvent.rl.prior_export import export_prior
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import task_from_dict

UNDER = {"max_elements": 1}  # strict enough that an untrained prior (types near uniform) breaks it at once


def _with_info(folder, info):
    cfg_path = folder / CONFIG
    config = json.loads(cfg_path.read_text())
    config["info"] = info
    cfg_path.write_text(json.dumps(config))
    return folder


def _n_elements(structures: list[Structure]) -> list[int]:
    return [len(s.composition.elements) for s in structures]


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    free = save_tiny_masked_prior(root / "free", max_atoms=6, sample_steps=4)
    under = _with_info(save_tiny_masked_prior(root / "under", max_atoms=6, sample_steps=4), {TRAINED_UNDER: UNDER})
    return free, under


def test_the_api_samples_a_fine_tuned_prior_inside_its_constraints(priors):
    free, under = priors
    assert not prior_constraints(free).active
    assert prior_constraints(under) == ChemConstraints.from_dict(UNDER)
    assert max(_n_elements(api_load_prior(free).sample(12, seed=0))) > 1  # the same weights, free: breaks it
    assert set(_n_elements(api_load_prior(under).sample(12, seed=0))) == {1}
    # a user's own constraint holds beside the prior's
    both = api_load_prior(under).sample(12, seed=0, constraints={"elements": ["Li", "Na"]})
    assert all(len(s.composition.elements) == 1 and s.composition.elements[0].symbol in ("Li", "Na") for s in both)


def test_the_sample_command_applies_and_records_the_priors_constraints(priors, tmp_path, capsys):
    _, under = priors
    out = tmp_path / "samples"
    assert main(["sample", "--n", "10", "--checkpoint", str(under), "--out", str(out), "--seed", "1"]) == 0
    assert "fine-tuned under the constraints {'max_elements': 1}" in capsys.readouterr().out
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["constraints"]["max_elements"] == 1
    cifs = sorted(out.glob("*.cif"))
    assert cifs and all(len(Structure.from_file(c).composition.elements) == 1 for c in cifs)


def test_optimize_from_a_fine_tuned_prior_runs_inside_its_constraints_and_save_prior_carries_them(priors, tmp_path):
    _, under = priors
    task = task_from_dict({"name": "light", "properties": {"light": {"target": "above", "threshold": 0.75}}})
    cfg = RLConfig(prior=str(under), batch_size=4, validity="none", kl_steps=2, threads=1, replay_per_iter=0)
    run = tmp_path / "run"
    optimize(task, "matinvent", 8, 0, run, cfg, scorer=Scorer(task, oracles={"light": LightFraction()}), progress=False)
    assert json.loads((run / "run.json").read_text())["config"]["constraints"]["max_elements"] == 1
    exported = export_prior(run, tmp_path / "exported")
    assert prior_constraints(exported) == ChemConstraints.from_dict(UNDER)
    assert set(_n_elements(api_load_prior(exported).sample(8, seed=2))) == {1}


def test_a_damaged_constraint_entry_names_the_file_and_the_key(priors, tmp_path):
    free, _ = priors
    bad = _with_info(save_tiny_masked_prior(tmp_path / "bad", max_atoms=6), {TRAINED_UNDER: {"max_elemnts": 2}})
    with pytest.raises(ConfigError, match=rf"{bad / CONFIG}: info.{TRAINED_UNDER}: unknown constraints key"):
        prior_constraints(bad)
    with pytest.raises(ConfigError, match="unknown constraints key 'max_elemnts'"):
        api_load_prior(bad).sample(2)
