"""The shared optimisation loop on a tiny prior: exact resumption, fail-fast validation, methods, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from rl_toy import TASK, LightFraction, save_tiny_prior

from matinvent.cli import main
from matinvent.config_io import ConfigError
from matinvent.io.run_memory import read_memory
from matinvent.oracles import Oracle
from matinvent.rl import METHODS, RLConfig, optimize
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import task_from_dict


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")  # N uniform over 2..5: mean 3.5


def config(prior, **kw) -> RLConfig:
    base = dict(
        prior=str(prior),
        batch_size=6,
        sample_steps=None,
        validity="none",
        lr=1e-3,
        kl_steps=2,
        threads=1,
        replay_per_iter=2,
    )
    return RLConfig(**{**base, **kw})


def run(prior, out, method="matinvent", budget=18, oracle=None, **kw):
    oracle = oracle or LightFraction()
    scorer = Scorer(TASK, oracles={"light": oracle})
    return optimize(TASK, method, budget, 0, out, config(prior, **kw), scorer=scorer, progress=False), oracle


def rows(out) -> pd.DataFrame:
    return read_memory(out).drop(columns=["id", "created"])


@pytest.fixture(scope="module")
def full_run(tiny_prior, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    summary, oracle = run(tiny_prior, out)
    return out, summary, oracle


class Killed(Exception):
    pass


@pytest.mark.parametrize("event", ["scored", "checkpoint"])
def test_killed_and_resumed_run_equals_uninterrupted_run(tiny_prior, tmp_path, full_run, event):
    full_out, full_summary, full_oracle = full_run

    def kill(ev, iteration):
        if ev == event and iteration == 1:
            raise Killed

    out = tmp_path / "run"
    oracle = LightFraction()
    scorer = Scorer(TASK, oracles={"light": oracle})
    with pytest.raises(Killed):
        optimize(TASK, "matinvent", 18, 0, out, config(tiny_prior), scorer=scorer, progress=False, callback=kill)
    with pytest.raises(FileExistsError, match="--resume"):
        optimize(TASK, "matinvent", 18, 0, out, config(tiny_prior), scorer=scorer, progress=False)
    summary = optimize(TASK, "matinvent", 18, 0, out, config(tiny_prior), scorer=scorer, progress=False, resume=True)
    a, b = rows(full_out), rows(out)
    pd.testing.assert_frame_equal(a.drop(columns=["run_id"]), b.drop(columns=["run_id"]))
    assert oracle.calls == full_oracle.calls  # nothing was evaluated twice
    for key in ("evaluations", "hits", "diversity_ratio", "iterations"):
        assert summary[key] == full_summary[key], key
    ma, mb = pd.read_csv(full_out / "metrics.csv"), pd.read_csv(out / "metrics.csv")
    pd.testing.assert_frame_equal(ma.drop(columns=["seconds", "elapsed"]), mb.drop(columns=["seconds", "elapsed"]))


def test_run_killed_with_sigkill_resumes_to_the_same_rows(tiny_prior, tmp_path, full_run):
    import subprocess
    import sys
    from pathlib import Path

    full_out, full_summary, full_oracle = full_run
    out = tmp_path / "run"
    script = Path(__file__).resolve().parents[1] / "rl_toy.py"
    proc = subprocess.run([sys.executable, str(script), str(tiny_prior), str(out), "18", "2"], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # killed by SIGKILL after iteration 2 was scored
    assert read_memory(out)["iteration"].max() == 2 and not (out / "summary.json").exists()
    oracle = LightFraction()
    scorer = Scorer(TASK, oracles={"light": oracle})
    optimize(TASK, "matinvent", 18, 0, out, config(tiny_prior), scorer=scorer, progress=False, resume=True)
    pd.testing.assert_frame_equal(rows(full_out).drop(columns=["run_id"]), rows(out).drop(columns=["run_id"]))
    assert oracle.calls == full_oracle.calls - int(read_memory(out).query("iteration <= 2")["valid"].sum())


def test_report_cli_on_a_run(full_run, tmp_path):
    out, _, _ = full_run
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "matinvent" in text and (tmp_path / "rep" / "reward.png").exists()


def test_memory_and_summary_contents(full_run):
    out, summary, oracle = full_run
    df = read_memory(out)
    assert summary["evaluations"] == 18 == int(df["valid"].sum()) == oracle.calls
    assert {"formula", "cif", "light", "reward", "filtered_reward", "hit", "valid", "iteration", "method"} <= set(df)
    assert set(df["method"]) == {"matinvent"} and df["run_id"].nunique() == 1
    assert df["iteration"].max() + 1 == summary["iterations"] >= 3
    assert ((df["light"] >= 0.75) == (df["hit"] == 1)).all()
    for key in ("evaluations", "hits", "burden", "diversity_ratio", "task", "method", "seed"):
        assert key in summary
    assert summary["burden"] is None and summary["hits"] == df.loc[df["hit"] == 1, "formula"].nunique()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["task"] == "light" and saved["method"] == "matinvent"
    assert (out / "agent" / "model.safetensors").exists()


class Rising(Oracle):
    """Toy property: the k-th structure it evaluates scores k (k = 1, 2, …), whatever it is."""

    name, unit = "rank", ""

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, structures):
        start, self.calls = self.calls, self.calls + len(structures)
        return [float(k) for k in range(start + 1, self.calls + 1)]


def test_replayed_crystals_enter_the_update_with_their_filtered_reward(tiny_prior, tmp_path, monkeypatch):
    """Eq. 18: replay keeps the diversity-filtered reward. Every crystal gets one formula, so the filter damps each
    by (1 − Occ/100); the rising oracle (reward k/20) makes the latest, damped crystal the buffer's best each time."""
    from matinvent.rl.methods import MatInvent

    task = task_from_dict({"name": "rank", "properties": {"rank": {"target": "above", "threshold": 20, "ramp": 20}}})
    update, policy_step = MatInvent.update, MatInvent.policy_step
    keys, used = [], []  # replayed entries' keys per update; (key, reward the update trained them with)

    def spy_update(self, rollout, replay):
        keys[:] = [e.key for e, _ in replay]
        return update(self, rollout, replay)

    def spy_policy_step(self, trajs, rewards, adv, use_kl, replayed=None, epochs=None):
        used.extend(zip(keys, np.asarray(rewards)[np.asarray(replayed, dtype=bool)], strict=True))
        return policy_step(self, trajs, rewards, adv, use_kl, replayed, epochs)

    monkeypatch.setattr("matinvent.rl.trainer.formula_of", lambda crystal: "X")
    monkeypatch.setattr(MatInvent, "update", spy_update)
    monkeypatch.setattr(MatInvent, "policy_step", spy_policy_step)
    scorer = Scorer(task, oracles={"rank": Rising()})
    optimize(
        task, "matinvent", 18, 0, tmp_path, config(tiny_prior, df_tol=0, df_buff=100), scorer=scorer, progress=False
    )
    memory = read_memory(tmp_path).set_index(["iteration", "idx"])
    assert len(used) >= 2  # every update after the first replays the one entry
    for key, reward in used:
        row = memory.loc[tuple(int(part) for part in key.split("_"))]
        assert reward == pytest.approx(row["filtered_reward"], rel=1e-12)
        assert row["filtered_reward"] < 0.99 * row["reward"]  # damped: raw and filtered really differ here


def test_budget_is_never_exceeded(tiny_prior, tmp_path):
    summary, oracle = run(tiny_prior, tmp_path / "r", budget=8)
    assert summary["evaluations"] == 8 == oracle.calls


def test_bad_inputs_fail_before_any_sampling(tiny_prior, tmp_path):
    oracle = LightFraction()
    scorer = Scorer(TASK, oracles={"light": oracle})
    with pytest.raises(ConfigError, match="unknown method 'ppo'"):
        optimize(TASK, "ppo", 10, 0, tmp_path / "a", config(tiny_prior), scorer=scorer)
    with pytest.raises(ConfigError, match="unknown task"):
        optimize("no_such_task", "matinvent", 10, 0, tmp_path / "b", config(tiny_prior), scorer=scorer)
    with pytest.raises(ConfigError, match="'topk_ratio'"):
        optimize(TASK, "matinvent", 10, 0, tmp_path / "c", config(tiny_prior, topk_ratio=1.5), scorer=scorer)
    with pytest.raises(ConfigError, match="budget"):
        optimize(TASK, "matinvent", 0, 0, tmp_path / "d", config(tiny_prior), scorer=scorer)
    with pytest.raises(ConfigError, match="'baseline' must be one of none, batch, normalize, got 'mean'"):
        optimize(TASK, "matinvent", 10, 0, tmp_path / "f", config(tiny_prior, baseline="mean"), scorer=scorer)
    with pytest.raises(FileNotFoundError, match="not a matinvent checkpoint"):
        optimize(TASK, "matinvent", 10, 0, tmp_path / "e", config(tmp_path / "nowhere"), scorer=scorer)
    assert oracle.calls == 0
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists() and not (tmp_path / "f").exists()


@pytest.mark.parametrize("method", [m for m in METHODS if m != "matinvent"])
def test_every_method_runs_through_the_shared_loop(tiny_prior, tmp_path, method):
    summary, _ = run(tiny_prior, tmp_path / method, method=method, budget=12)
    assert summary["method"] == method and summary["evaluations"] == 12
    metrics = pd.read_csv(tmp_path / method / "metrics.csv")
    trains = method != "prior"
    assert math.isnan(metrics["loss"].iloc[0]) != trains
    agent = torch.load(tmp_path / method / "checkpoint.pt", weights_only=True)["agent"]
    from safetensors.torch import load_file

    prior = load_file(str(tiny_prior / "model.safetensors"))
    changed = any(not torch.equal(agent[k], prior[k]) for k in prior)
    assert changed == trains


def test_optimize_cli_validates_before_running(tmp_path, capsys):
    assert main(["optimize", "--task", "density", "--method", "ppo", "--budget", "5", "--out", str(tmp_path)]) == 2
    assert "unknown method 'ppo'" in capsys.readouterr().err
    assert main(["optimize", "--task", "nope", "--budget", "5", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


class HeavyFraction(Oracle):
    """Toy property: the fraction of atoms with Z ≥ 40."""

    name, unit = "heavy", ""

    def evaluate(self, structures):
        return [np.mean([site.specie.Z >= 40 for site in s]) for s in structures]


def heavy_fraction(model, steps: int, n: int = 128) -> float:
    traj = model.sample(n, generator=torch.Generator().manual_seed(123), steps=steps)
    return float((traj.final.Z >= 40).float().mean())


def test_matinvent_raises_a_toy_reward_with_bounded_kl(tmp_path):
    """10 iterations of the paper's Eq. 17 on the bundled small prior (10-step sampler) move it toward heavy elements.

    (With the stabilised defaults, normalised advantages + per-dimension log-probs, this Gaussian-type toy did
    not move within 10 iterations: 0.74 → 0.70.)
    """
    from matinvent.prior.checkpoint import load_prior

    task = task_from_dict(
        {"name": "heavy", "properties": {"heavy": {"target": "above", "threshold": 0.99, "ramp": 0.99}}}
    )
    # the filter at (3, 6), the default when this was written: at (0, 2) this toy moved less (0.74 → 0.78)
    cfg = RLConfig(
        prior="mp20_small", batch_size=16, sample_steps=10, validity="none", kl_steps=5, threads=1, replay_per_iter=4,
        baseline="none", logp_reduce="sum", df_tol=3, df_buff=6,
    )  # fmt: skip
    scorer = Scorer(task, oracles={"heavy": HeavyFraction()})
    optimize(task, "matinvent", 10_000, 0, tmp_path, cfg, scorer=scorer, progress=False, max_iterations=10)
    before = heavy_fraction(load_prior("mp20_small"), steps=10)
    after = heavy_fraction(load_prior(tmp_path / "agent"), steps=10)
    assert after > before + 0.05, (before, after)
    kl = pd.read_csv(tmp_path / "metrics.csv")["kl"]
    # the reward-weighted KL holds the agent: the last iterations' KL stays below the first update's
    # (measured 18,665 → 2,631 nats, summed over components and steps, 2026-12-07)
    assert np.isfinite(kl).all() and kl.iloc[-3:].max() < kl.iloc[0], kl.tolist()


def test_the_defaults_learn_a_toy_task(tmp_path):
    """The default method and settings (normalised advantages, per-dimension log-probs, PPO on the true ratio, the
    exact KL) on the default prior: 8 iterations of 16 crystals raise the heavy-atom fraction of fresh samples by
    more than 0.15 (measured 0.30 → 0.74 in 12 iterations on 2026-12-07)."""
    from matinvent.prior.checkpoint import load_prior

    task = task_from_dict(
        {"name": "heavy", "properties": {"heavy": {"target": "above", "threshold": 0.99, "ramp": 0.99}}}
    )
    cfg = RLConfig(batch_size=16, validity="none", threads=1, relax="none")  # everything else at its default
    scorer = Scorer(task, oracles={"heavy": HeavyFraction()})
    optimize(task, "matinvent", 10_000, 0, tmp_path, cfg, scorer=scorer, progress=False, max_iterations=8)
    before = heavy_fraction(load_prior(cfg.prior), steps=cfg.sample_steps)
    after = heavy_fraction(load_prior(tmp_path / "agent"), steps=cfg.sample_steps)
    assert after > before + 0.15, (before, after)
    rewards = pd.read_csv(tmp_path / "metrics.csv")["reward_mean"]
    assert rewards.iloc[-3:].mean() > rewards.iloc[:3].mean() + 0.1, rewards.tolist()


def test_a_run_that_never_gets_a_valid_crystal_stops_with_a_message(tiny_prior, tmp_path, monkeypatch):
    import matinvent.rl.trainer as trainer

    monkeypatch.setattr(trainer, "gate_flags", lambda crystals, mode: (np.zeros(len(crystals), dtype=bool), []))
    oracle = LightFraction()
    scorer = Scorer(TASK, oracles={"light": oracle})
    cfg = config(tiny_prior)
    with pytest.raises(RuntimeError, match="without a valid crystal"):
        optimize(TASK, "prior", 10, 0, tmp_path, cfg, scorer=scorer, progress=False)
    assert oracle.calls == 0 and (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "method, key",
    [
        ("matinvent", "epochs"),
        ("reinforce", "reinforce_epochs"),
        ("hill-climb", "hc_epochs"),
        ("weighted-denoising", "wd_epochs"),
    ],
)
def test_each_method_takes_its_own_number_of_optimiser_steps(tiny_prior, tmp_path, monkeypatch, method, key):
    from matinvent.rl.methods import METHOD_CLASSES

    calls, per_update = [], []
    adam_step, update = torch.optim.Adam.step, METHOD_CLASSES[method].update

    def counting_step(self, *args, **kwargs):
        calls.append(1)
        return adam_step(self, *args, **kwargs)

    def counting_update(self, *args, **kwargs):
        before = len(calls)
        out = update(self, *args, **kwargs)
        per_update.append(len(calls) - before)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    monkeypatch.setattr(METHOD_CLASSES[method], "update", counting_update)
    steps = {"epochs": 1, "reinforce_epochs": 1, "hc_epochs": 1, "wd_epochs": 1, key: 3}
    run(tiny_prior, tmp_path / method, method=method, budget=12, **steps)
    assert per_update and set(per_update) <= {0, 3} and 3 in per_update
