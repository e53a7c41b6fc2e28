"""RL over a prior with masked (absorbing-state) atom types: every method runs, resume is exact."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from model_utils import save_tiny_masked_prior
from rl_toy import TASK, LightFraction

from matinvent.io.run_memory import read_memory
from matinvent.rl import RLConfig, optimize
from matinvent.scoring.scorer import Scorer


@pytest.fixture(scope="module")
def masked_prior(tmp_path_factory):
    return save_tiny_masked_prior(tmp_path_factory.mktemp("prior") / "masked", max_atoms=5, sample_steps=6)


def _config(prior) -> RLConfig:
    return RLConfig(prior=str(prior), batch_size=6, validity="none", lr=1e-3, kl_steps=2, threads=1, replay_per_iter=2)


class Killed(Exception):
    pass


@pytest.mark.parametrize("method", ["matinvent", "weighted-denoising", "reinforce", "hill-climb"])
def test_masked_prior_trains_and_resumes_exactly(masked_prior, tmp_path, method):
    def scorer():
        return Scorer(TASK, oracles={"light": LightFraction()})

    full = optimize(TASK, method, 18, 0, tmp_path / "full", _config(masked_prior), scorer=scorer(), progress=False)
    assert full["evaluations"] == 18

    def kill(ev, iteration):
        if ev == "scored" and iteration == 1:
            raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        optimize(TASK, method, 18, 0, out, _config(masked_prior), scorer=scorer(), progress=False, callback=kill)
    optimize(TASK, method, 18, 0, out, _config(masked_prior), scorer=scorer(), progress=False, resume=True)
    a = read_memory(tmp_path / "full").drop(columns=["id", "created", "run_id"])
    b = read_memory(out).drop(columns=["id", "created", "run_id"])
    pd.testing.assert_frame_equal(a, b)
    agent = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["agent"]
    from safetensors.torch import load_file

    prior = load_file(str(masked_prior / "model.safetensors"))
    assert any(not torch.equal(agent[k], prior[k]) for k in prior)
