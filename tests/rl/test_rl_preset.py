"""Issue 33: ``preset: paper`` is Eq. 17 as written (whole batch, summed log-probs over every step, r as the weight,
no stabiliser) with the official code's values, and a run records it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from rl_toy import TASK, LightFraction, save_tiny_prior

from matinvent.config_io import ConfigError
from matinvent.io.run_memory import read_memory
from matinvent.rl import RLConfig, load_rl_config, optimize
from matinvent.rl.config import PRESETS
from matinvent.rl.methods import MatInvent
from matinvent.scoring.scorer import Scorer


def test_the_paper_preset_sets_eq_17_and_the_official_values(tmp_path):
    cfg = load_rl_config(None, preset="paper")
    expected = {  # written out here, not read from PRESETS: Eq. 17 and schwallergroup/matinvent's configs
        "topk_ratio": 1.0, "logp_reduce": "sum", "baseline": "none", "ppo_clip": 0.0, "sigma_floor": 0.0,
        "skip_last": 0, "kl_steps": 0, "natoms_action": False, "beta": 0.025, "lam": 1.1, "replay_size": 200,
        "replay_per_iter": 10, "replay_min_reward": 0.1, "df_tol": 2, "df_buff": 4, "lr": 1e-4,
    }  # fmt: skip
    assert {k: getattr(cfg, k) for k in expected} == expected and cfg.preset == "paper"
    assert dataclasses.asdict(cfg.kl_weights) == {"F_corr": 1.0, "F": 1.0, "L": 1.0, "A": 1.0}
    assert set(PRESETS["paper"]) >= set(expected)
    path = tmp_path / "c.yaml"
    path.write_text("preset: paper\nbeta: 0.5\n")  # a key given beside the preset overrides it
    assert (load_rl_config(path).beta, load_rl_config(path).lam) == (0.5, 1.1)
    path.write_text("preset: pape\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: config key 'preset' must be one of paper"):
        load_rl_config(path)
    assert RLConfig().preset is None and RLConfig().topk_ratio == 0.5  # the defaults are ours, not the paper's


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")


def test_a_paper_run_trains_on_every_crystal_over_every_step_and_records_the_preset(tiny_prior, tmp_path, monkeypatch):
    seen = []
    original = MatInvent.policy_step

    def spy(self, trajs, rewards, adv, use_kl, replayed=None, epochs=None):
        seen.append((len(trajs), int((~replayed).sum()), np.asarray(adv).copy(), np.asarray(rewards).copy()))
        steps = self.draw_steps()
        assert steps == list(range(len(self.ts)))  # K = T: every reverse step, no skip_last
        return original(self, trajs, rewards, adv, use_kl, replayed, epochs)

    monkeypatch.setattr(MatInvent, "policy_step", spy)
    cfg = load_rl_config(None, preset="paper")
    cfg.prior, cfg.batch_size, cfg.sample_steps, cfg.validity, cfg.threads = str(tiny_prior), 6, None, "none", 1
    oracle = LightFraction()
    optimize(TASK, "matinvent", 12, 0, tmp_path / "run", cfg, scorer=Scorer(TASK, oracles={"light": oracle}),
             progress=False)  # fmt: skip
    memory = read_memory(tmp_path / "run")
    evaluated = memory.groupby("iteration")["valid"].sum().tolist()
    assert len(seen) == len(evaluated) >= 2
    assert [fresh for _, fresh, _, _ in seen] == evaluated  # every evaluated crystal of the batch, no top-k
    for _, _, adv, rewards in seen:
        np.testing.assert_array_equal(adv, rewards)  # r itself is the PG weight (no baseline)
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert config["preset"] == "paper" and config["topk_ratio"] == 1.0 and config["logp_reduce"] == "sum"


def test_the_cli_flag_and_the_shipped_file_give_the_same_config(monkeypatch):
    from pathlib import Path

    from matinvent.cli.parser import build_parser

    args = build_parser().parse_args(["optimize", "--task", "density", "--budget", "1", "--out", "x", "--rl-preset",
                                      "paper", "--preset", "no-radioactive"])  # fmt: skip
    assert args.rl_preset == "paper" and args.preset == "no-radioactive"  # the constraint preset is another flag
    shipped = load_rl_config(Path(__file__).resolve().parents[2] / "configs" / "paper.yaml")
    assert dataclasses.asdict(shipped) == dataclasses.asdict(load_rl_config(None, preset=args.rl_preset))


def test_the_python_api_applies_a_preset_override(tmp_path):
    from matinvent.api import _config

    for config in (None, {}, {"beta": 0.5}, RLConfig()):
        cfg = _config(config, {"preset": "paper", "batch_size": 8})
        assert cfg.preset == "paper" and cfg.topk_ratio == 1.0 and cfg.logp_reduce == "sum" and cfg.batch_size == 8
        assert cfg.beta == (0.5 if config == {"beta": 0.5} else 0.025)  # a mapping's own keys override the preset
    with pytest.raises(ConfigError, match="preset"):
        _config(None, {"preset": "nope"})
