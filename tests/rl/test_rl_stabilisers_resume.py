"""Exact resumption with every stabiliser switched on, and validation of the stabiliser keys."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from rl_toy import TASK, LightFraction, save_tiny_prior

from matinvent.config_io import ConfigError
from matinvent.io.run_memory import read_memory
from matinvent.prior.checkpoint import load_prior
from matinvent.rl import RLConfig, optimize
from matinvent.rl.config import ComponentWeights, rl_config_from_dict
from matinvent.scoring.scorer import Scorer

BUDGET = 18  # evaluations: at least 3 iterations of 6 (crystals with a degenerate cell are not evaluated)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")  # N uniform over 2..5: mean 3.5


def all_switches(prior, replay_pg: str) -> RLConfig:
    return RLConfig(
        prior=str(prior), batch_size=6, sample_steps=None, validity="none", lr=1e-3, kl_steps=2, threads=1,
        replay_per_iter=2,
        baseline="normalize", logp_reduce="mean", sigma_floor=1e-3, skip_last=1, ppo_clip=0.2, epochs=2,
        replay_pg=replay_pg, kl_weights=ComponentWeights(F_corr=0.5, F=2.0, L=0.1, A=1.5), natoms_action=True,
        rejected_pg="zero", element_balance=1.0, element_balance_window=8,
    )  # fmt: skip


def run(prior, out, replay_pg, **kw):
    oracle = LightFraction()
    scorer = Scorer(TASK, oracles={"light": oracle})
    summary = optimize(
        TASK, "matinvent", BUDGET, 0, out, all_switches(prior, replay_pg), scorer=scorer, progress=False, **kw
    )
    return summary, oracle


@pytest.fixture(scope="module")
def full_runs(tiny_prior, tmp_path_factory):
    out = {}
    for mode in ("include", "exclude"):
        path = tmp_path_factory.mktemp(f"full_{mode}")
        summary, oracle = run(tiny_prior, path, mode)
        out[mode] = (path, summary, oracle)
    return out


def rows(out) -> pd.DataFrame:
    return read_memory(out).drop(columns=["id", "created", "run_id"])


def metrics(out) -> pd.DataFrame:
    return pd.read_csv(out / "metrics.csv").drop(columns=["seconds", "elapsed"])


def assert_same_state(a, b, where=""):
    """Nested dicts/lists of tensors and numbers are exactly equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


class Killed(Exception):
    pass


def test_the_full_runs_exercise_every_switch(full_runs, tiny_prior):
    for mode, (out, summary, oracle) in full_runs.items():
        assert summary["evaluations"] == BUDGET == oracle.calls and summary["iterations"] >= 3, mode
        m = metrics(out)
        assert (m["replay_size"].iloc[:-1] > 0).all(), mode  # replay joins every update after the first
        assert m["clip_frac"].notna().all() and m["kl"].notna().all() and m["loss"].notna().all(), mode
        # (not natoms_mean's spread, which sampling noise alone gives: the learnt atom-count policy itself)
        natoms = torch.load(out / "checkpoint.pt", weights_only=True)["natoms"]
        sup = natoms["support"]
        learnt = torch.log_softmax(natoms["logits"].masked_fill(~sup, -torch.inf), 0)
        assert (learnt[sup] - natoms["prior_logp"][sup]).abs().max() > 1e-3, mode  # N was trained
        assert not torch.equal(load_prior(out / "agent").natoms_prob, load_prior(tiny_prior).natoms_prob), mode
        # the element balance acted: a formula's first crystal (diversity factor 1) kept less than its reward
        r = rows(out)
        first = ~r["formula"].duplicated() & r["valid"].astype(bool) & (r["reward"] > 0)
        assert (r.loc[first, "filtered_reward"] < r.loc[first, "reward"] - 1e-9).any(), mode
    # the replay_pg switch is live in the loop: the same batches train differently
    a = torch.load(full_runs["include"][0] / "checkpoint.pt", weights_only=True)["agent"]
    b = torch.load(full_runs["exclude"][0] / "checkpoint.pt", weights_only=True)["agent"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert rows(full_runs["include"][0]).iloc[:6].equals(rows(full_runs["exclude"][0]).iloc[:6])  # same first batch


def test_rejected_pg_zero_hands_the_gates_rejects_to_the_update(tiny_prior, tmp_path, monkeypatch):
    """Every kept crystal of a batch is evaluated or rejected, never both; the tiny prior's degenerate cells
    (built as None, so gated out) are the rejects; crystals past the budget are neither."""
    from matinvent.rl.methods import MatInvent

    seen = []
    update = MatInvent.update

    def spy(self, rollout, replay):
        seen.append((rollout.evaluated.copy(), rollout.rejected.copy(), [c is None for c in rollout.crystals]))
        return update(self, rollout, replay)

    monkeypatch.setattr(MatInvent, "update", spy)
    scorer = Scorer(TASK, oracles={"light": LightFraction()})
    optimize(TASK, "matinvent", BUDGET, 0, tmp_path, all_switches(tiny_prior, "include"), scorer=scorer, progress=False)
    assert sum(int(r.sum()) for _, r, _ in seen) > 0  # rejects occurred
    for evaluated, rejected, none in seen[:-1]:  # all but the last batch are kept whole
        assert not (evaluated & rejected).any() and (evaluated | rejected).all()
        assert all(rejected[i] for i, n in enumerate(none) if n)
    evaluated, rejected, _ = seen[-1]
    assert int(evaluated.sum()) == BUDGET - sum(int(e.sum()) for e, _, _ in seen[:-1])


def test_stored_sampling_log_probs_match_the_update_so_the_first_batch_is_never_clipped(tiny_prior, tmp_path):
    """With one epoch, iteration 0 (no replay yet) trains at ρ = 1 exactly; later, replayed trajectories clip."""
    cfg = all_switches(tiny_prior, "include")
    cfg.epochs = 1
    scorer = Scorer(TASK, oracles={"light": LightFraction()})
    optimize(TASK, "matinvent", BUDGET, 0, tmp_path, cfg, scorer=scorer, progress=False)
    clip = metrics(tmp_path)["clip_frac"]
    assert clip.iloc[0] == 0.0 and clip.iloc[1:].max() > 0, clip.tolist()


@pytest.mark.parametrize("event", ["scored", "checkpoint"])
@pytest.mark.parametrize("replay_pg", ["include", "exclude"])
def test_killed_and_resumed_run_with_every_switch_equals_uninterrupted_run(
    tiny_prior, tmp_path, full_runs, replay_pg, event
):
    full_out, full_summary, full_oracle = full_runs[replay_pg]

    def kill(ev, iteration):
        if ev == event and iteration == 1:
            raise Killed

    out = tmp_path / "run"
    with pytest.raises(Killed):
        run(tiny_prior, out, replay_pg, callback=kill)
    assert not (out / "summary.json").exists()
    summary, oracle = run(tiny_prior, out, replay_pg, resume=True)
    pd.testing.assert_frame_equal(rows(full_out), rows(out))
    # nothing evaluated twice: the resumed run scored only what the killed one had not committed
    full_rows = rows(full_out)
    committed = 2 if event == "scored" else 1  # iterations 0, 1 were scored / iteration 0 was checkpointed
    killed_calls = int(full_rows.loc[full_rows["iteration"] < committed, "valid"].sum())
    assert 0 < killed_calls and oracle.calls == full_oracle.calls - killed_calls
    for key in ("evaluations", "hits", "diversity_ratio", "iterations"):
        assert summary[key] == full_summary[key], key
    pd.testing.assert_frame_equal(metrics(full_out), metrics(out))
    full_state = torch.load(full_out / "checkpoint.pt", weights_only=True)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert_same_state(
        {k: v for k, v in full_state.items() if k != "elapsed"}, {k: v for k, v in state.items() if k != "elapsed"}
    )
    torch.testing.assert_close(load_prior(out / "agent").natoms_prob, load_prior(full_out / "agent").natoms_prob)


# --- validation of the stabiliser keys ----------------------------------------------------------------
@pytest.mark.parametrize(
    "data, message",
    [
        ({"logp_reduce": "avg"}, "'logp_reduce' must be one of sum, mean, got 'avg'"),
        ({"replay_pg": "maybe"}, "'replay_pg' must be one of include, exclude, got 'maybe'"),
        ({"replay_pg": False}, "'replay_pg' must be a string"),  # YAML reads a bare `off` as false
        ({"ppo_clip": 1.5}, r"'ppo_clip' must be in \[0, 1\), got 1.5"),
        ({"ppo_clip": -0.1}, "'ppo_clip' must be >= 0"),
        ({"kl_weights": {"L": -1.0}}, "'kl_weights.L' must be a finite number >= 0, got -1.0"),
        ({"kl_weights": {"X": 1.0}}, "unknown config key 'kl_weights.X'"),
        ({"sigma_floor": math.nan}, "'sigma_floor' must be a finite number"),
        ({"sigma_floor": -1e-3}, "'sigma_floor' must be >= 0"),
        ({"skip_last": -1}, "'skip_last' must be >= 0"),
        ({"baseline": "mean"}, "'baseline' must be one of none, batch, normalize"),
        ({"adv_clip": 0.0}, "'adv_clip' must be > 0"),
        ({"natoms_lr": 0.0}, "'natoms_lr' must be > 0"),
        ({"element_balance_reference": "val"}, "'element_balance_reference' must be one of mp20, start, got 'val'"),
        ({"element_balance": -1.0}, "'element_balance' must be"),
    ],
)
def test_invalid_stabiliser_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        rl_config_from_dict(data)


def test_valid_stabiliser_values_load():
    cfg = rl_config_from_dict(
        {
            "logp_reduce": "mean", "replay_pg": "exclude", "ppo_clip": 0.2, "sigma_floor": 1e-3, "skip_last": 1,
            "kl_weights": {"L": 0.1}, "baseline": "normalize", "natoms_action": True,
        }
    )  # fmt: skip
    assert cfg.kl_weights.as_list() == [1.0, 1.0, 0.1, 1.0]
    assert (cfg.logp_reduce, cfg.replay_pg, cfg.ppo_clip, cfg.skip_last) == ("mean", "exclude", 0.2, 1)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_kl_weight_is_rejected(value):
    with pytest.raises(ConfigError, match="'kl_weights.L'"):
        rl_config_from_dict({"kl_weights": {"L": value}})


def test_skip_last_beyond_the_sampler_fails_before_the_run_folder_is_written(tiny_prior, tmp_path):
    cfg = all_switches(tiny_prior, "include")
    cfg.skip_last = 6  # the tiny prior samples 6 steps
    scorer = Scorer(TASK, oracles={"light": LightFraction()})
    with pytest.raises(ConfigError, match="'skip_last'"):
        optimize(TASK, "matinvent", BUDGET, 0, tmp_path / "run", cfg, scorer=scorer, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["reinforce", "hill-climb", "weighted-denoising", "prior"])
def test_the_baselines_train_with_the_stabilisers_off(tiny_prior, tmp_path, method):
    """Only matinvent is stabilised: the other methods get the paper's terms whatever the config says."""
    from matinvent.prior.checkpoint import load_prior as load
    from matinvent.rl.trainer import RLTrainer

    cfg = all_switches(tiny_prior, "exclude")
    trainer = RLTrainer(cfg, TASK, Scorer(TASK, oracles={"light": LightFraction()}), load(tiny_prior), method, 0,
                        tmp_path, "x")  # fmt: skip
    assert trainer.natoms is None
    assert (trainer.cfg.ppo_clip, trainer.cfg.logp_reduce, trainer.cfg.skip_last, trainer.cfg.sigma_floor) == (
        0.0, "sum", 0, 0.0)  # fmt: skip
    assert trainer.cfg.kl_weights == ComponentWeights() and trainer.cfg.replay_pg == "include"
    trainer.step(BUDGET)  # and it runs
    trainer.close()
    stab = RLTrainer(cfg, TASK, Scorer(TASK, oracles={"light": LightFraction()}), load(tiny_prior), "matinvent", 0,
                     tmp_path / "m", "y")  # fmt: skip
    assert stab.natoms is not None and stab.cfg.ppo_clip == 0.2
    stab.close()
