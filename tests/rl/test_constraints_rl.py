"""Constraints in RL runs: stored with the run, every sampled crystal inside, exact recomputation and resume."""

from __future__ import annotations

import dataclasses
import io
import json

import ase.io
import pandas as pd
import pytest
import torch
from ase.data import chemical_symbols
from model_utils import save_tiny_masked_prior
from rl_toy import LightFraction

from matinvent.config_io import ConfigError
from matinvent.crystal.constraints import ChemConstraints
from matinvent.io.run_memory import read_memory
from matinvent.prior.checkpoint import load_prior
from matinvent.rl import RLConfig, optimize
from matinvent.rl.objective import component_log_probs
from matinvent.rl.trainer import RLTrainer
from matinvent.rl.trajectories import stack_step
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import task_from_dict

LIGHT = {"light": {"target": "above", "threshold": 0.75, "ramp": 0.75}}
TASK = task_from_dict({"name": "light", "properties": LIGHT, "constraints": {"exclude": "O"}})
CONSTRAINTS = {"elements": "Li,Be,O,Na,Mg,Ba", "max_elements": 2, "natoms": [3, 5]}
EFFECTIVE = ChemConstraints(elements="Li,Be,O,Na,Mg,Ba", exclude="O", max_elements=2, natoms=(3, 5))  # + the task


@pytest.fixture(scope="module")
def masked_prior(tmp_path_factory):
    return save_tiny_masked_prior(tmp_path_factory.mktemp("prior") / "masked", max_atoms=6, sample_steps=5)


def _config(prior, **kw) -> RLConfig:
    base = {
        "prior": str(prior), "batch_size": 6, "validity": "none", "lr": 1e-3, "kl_steps": 2, "threads": 1,
        "replay_per_iter": 2, "ppo_clip": 0.2, "natoms_action": True, "constraints": CONSTRAINTS,
    }  # fmt: skip
    return RLConfig(**{**base, **kw})


def _scorer() -> Scorer:
    return Scorer(TASK, oracles={"light": LightFraction()})


class Killed(Exception):
    pass


def test_a_constrained_run_stays_inside_stores_its_constraints_and_resumes_exactly(masked_prior, tmp_path):
    full = tmp_path / "full"
    optimize(TASK, "matinvent", 12, 0, full, _config(masked_prior), scorer=_scorer(), progress=False)
    stored = json.loads((full / "run.json").read_text())["config"]["constraints"]
    assert stored == EFFECTIVE.to_dict()  # the task's and the config's, combined
    rows = read_memory(full)
    assert int(rows["valid"].sum()) == 12
    for cif in rows["cif"][rows["cif"] != ""]:  # ASE also reads the degenerate cells pymatgen refuses
        atoms = ase.io.read(io.StringIO(cif), format="cif").get_chemical_symbols()
        assert EFFECTIVE.allows(atoms), atoms
    info = json.loads((full / "agent" / "config.json").read_text())["info"]
    assert info["trained_under_constraints"] == EFFECTIVE.to_dict()

    def kill(event, iteration):
        if event == "scored" and iteration == 1:
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        optimize(TASK, "matinvent", 12, 0, out, _config(masked_prior), scorer=_scorer(), progress=False, callback=kill)
    changed = _config(masked_prior, constraints={**CONSTRAINTS, "max_elements": 3})
    with pytest.raises(ConfigError, match=r"config key 'constraints.max_elements' was 2, now 3"):
        optimize(TASK, "matinvent", 12, 0, out, changed, scorer=_scorer(), progress=False, resume=True)
    optimize(TASK, "matinvent", 12, 0, out, _config(masked_prior), scorer=_scorer(), progress=False, resume=True)
    drop = ["id", "created", "run_id"]
    pd.testing.assert_frame_equal(read_memory(full).drop(columns=drop), read_memory(out).drop(columns=drop))


def test_the_trainer_recomputes_the_sampling_time_log_probs_under_the_run_mask(masked_prior, tmp_path):
    cfg = dataclasses.replace(_config(masked_prior), constraints=EFFECTIVE.to_dict())
    trainer = RLTrainer(cfg, TASK, _scorer(), load_prior(masked_prior), "matinvent", 0, tmp_path / "a", "a")
    trajs, _ = trainer.sample()
    for t in trajs:  # every trajectory, also those whose cell is degenerate (an untrained prior)
        Z = trainer.agent.decode_types(t.A[-1], torch.zeros(t.num_atoms, dtype=torch.long), torch.tensor([t.num_atoms]))
        assert EFFECTIVE.allows([chemical_symbols[z] for z in Z.tolist()])
    assert set(trainer.natoms.sample(200).tolist()) <= {3, 4, 5}
    # a second trainer built from the same config (as --resume builds it) scores the stored actions alike
    again = RLTrainer(cfg, TASK, _scorer(), load_prior(masked_prior), "matinvent", 0, tmp_path / "b", "b")
    for trainer_ in (trainer, again):
        for s in range(len(trainer_.ts)):
            tr, batch, num_atoms = stack_step(trajs, s, trainer_.ts)
            p = trainer_.agent.transition_params(tr, batch, num_atoms)
            lp = component_log_probs(p, tr, batch, num_atoms, cfg.sigma_floor, cfg.logp_reduce)
            torch.testing.assert_close(lp, torch.stack([t.logp[s] for t in trajs]), rtol=1e-5, atol=1e-5)
        n = torch.tensor([t.num_atoms for t in trajs])
        torch.testing.assert_close(trainer_.natoms.log_prob(n).detach(), torch.cat([t.logp_N for t in trajs]))
    trainer.close()
    again.close()
