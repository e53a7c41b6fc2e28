"""The diversity filter, the replay buffer, the running metrics and K-of-T step subsampling."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from matinvent.config_io import ConfigError
from matinvent.prior.likelihood import transition_log_prob
from matinvent.rl.config import RLConfig, validate
from matinvent.rl.diversity import DiversityFilter
from matinvent.rl.methods import MatInvent, top_indices
from matinvent.rl.metrics import RunningMetrics
from matinvent.rl.replay import ReplayBuffer, ReplayEntry
from matinvent.rl.trajectories import CrystalTrajectory, split_trajectory, stack_step


def test_diversity_filter_matches_the_linear_decay_formula():
    df = DiversityFilter(tol=3, buff=6)
    # the 8 evaluations of one formula see Occ = 0..7 earlier evaluations
    out = df(["NaCl"] * 8, [0.9] * 8)
    expected = [0.9, 0.9, 0.9, 0.9, 0.9 * 2 / 3, 0.9 * 1 / 3, 0.0, 0.0]
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # another formula is unaffected; counts persist across calls
    np.testing.assert_allclose(df(["MgO", "NaCl"], [0.5, 1.0]), [0.5, 0.0])
    assert df.saturated() == {"NaCl"}
    df2 = DiversityFilter(tol=1, buff=5)
    df2.load_state_dict(df.state_dict())
    assert (df2.tol, df2.buff, df2.counts) == (3, 6, df.counts)


def test_diversity_filter_factor_at_the_edges():
    df = DiversityFilter(tol=3, buff=6)
    assert [df.factor(o) for o in (0, 3, 4, 5, 6, 9)] == [1.0, 1.0, 2 / 3, 1 / 3, 0.0, 0.0]
    with pytest.raises(ValueError, match="tol < buff"):
        DiversityFilter(tol=6, buff=6)


def _traj(seed: int, n: int = 2, steps: int = 3) -> CrystalTrajectory:
    g = torch.Generator().manual_seed(seed)
    return CrystalTrajectory(
        A=torch.randn(steps + 1, n, 5, generator=g),
        F=torch.rand(steps + 1, n, 3, generator=g),
        L=torch.randn(steps + 1, 3, 3, generator=g),
        F_mid=torch.rand(steps, n, 3, generator=g),
    )


def test_replay_buffer_rules(tmp_path):
    buf = ReplayBuffer(tmp_path / "replay", size=3, min_reward=0.1)
    assert not buf.add("a", "NaCl", 0.1, _traj(0))  # reward must exceed min_reward
    assert buf.add("b", "NaCl", 0.5, _traj(1))
    assert not buf.add("c", "NaCl", 0.4, _traj(2))  # one entry per formula: the best
    assert buf.add("d", "NaCl", 0.7, _traj(3))
    assert buf.add("e", "MgO", 0.3, _traj(4)) and buf.add("f", "KCl", 0.2, _traj(5))
    assert not buf.add("g", "LiF", 0.15, _traj(6))  # full and worse than every entry
    assert buf.add("h", "LiF", 0.25, _traj(7))  # full: evicts the lowest (KCl 0.2)
    assert {f: e.reward for f, e in buf.entries.items()} == {"NaCl": 0.7, "MgO": 0.3, "LiF": 0.25}
    buf.purge({"MgO", "CsCl"})
    assert set(buf.entries) == {"NaCl", "LiF"}
    # files of dropped entries survive until the buffer state has been checkpointed
    assert (tmp_path / "replay" / "e.safetensors").exists()
    buf.collect_garbage()
    assert sorted(p.name for p in (tmp_path / "replay").iterdir()) == ["d.safetensors", "h.safetensors"]
    drawn = buf.sample(10, np.random.default_rng(0))
    assert sorted(e.formula for e, _ in drawn) == ["LiF", "NaCl"]
    entry, traj = next((e, t) for e, t in drawn if e.formula == "NaCl")
    assert torch.equal(traj.A, _traj(3).A)
    restored = ReplayBuffer(tmp_path / "replay")
    restored.load_state_dict(buf.state_dict())
    assert restored.entries == buf.entries and restored.size == 3


def test_replay_buffer_admits_ranks_and_replays_by_the_filtered_reward(tmp_path):
    """Eq. 18: an entry keeps the reward the diversity filter gave its crystal, and that is what counts."""
    formulas, raw = ["NaCl", "NaCl", "MgO"], [0.3, 0.9, 0.95]
    filtered = DiversityFilter(tol=0, buff=3)(formulas, raw)  # the second NaCl is damped to 0.9 · 2/3
    np.testing.assert_allclose(filtered, [0.3, 0.6, 0.95])
    buf = ReplayBuffer(tmp_path / "replay", size=2, min_reward=0.1)
    for i, (f, r, fr) in enumerate(zip(formulas, raw, filtered, strict=True)):
        assert buf.add(f"k{i}", f, r, _traj(i), fr)  # the damped NaCl (0.6) still beats the first one (0.3)
    kept = {f: (e.key, e.reward, e.filtered_reward) for f, e in buf.entries.items()}
    assert kept == {"NaCl": ("k1", 0.9, pytest.approx(0.6)), "MgO": ("k2", 0.95, 0.95)}
    assert not buf.add("k3", "KCl", 0.9, _traj(3), 0.05)  # raw reward high, filtered one not above min_reward
    assert buf.add("k4", "LiF", 0.7, _traj(4), 0.7)  # full: evicts NaCl (filtered 0.6), though its raw 0.9 is higher
    drawn = buf.sample(5, np.random.default_rng(0))
    assert sorted((e.formula, e.filtered_reward) for e, _ in drawn) == [("LiF", 0.7), ("MgO", 0.95)]
    restored = ReplayBuffer(tmp_path / "replay")
    restored.load_state_dict(buf.state_dict())
    assert restored.entries == buf.entries
    # a buffer checkpointed before filtered rewards were kept replays the raw reward it held
    old = {"size": 2, "min_reward": 0.1, "entries": [{"key": "k4", "formula": "LiF", "reward": 0.7}]}
    restored.load_state_dict(old)
    assert restored.entries == {"LiF": ReplayEntry(key="k4", formula="LiF", reward=0.7, filtered_reward=0.7)}


def test_running_metrics_burden_and_diversity():
    m = RunningMetrics(n_hits=2, diversity_budget=4)
    m.add_many([(False, "X", False), (True, "A", True), (True, "A", True), (True, "B", False)])
    assert (m.samples, m.evaluations, m.hits, m.burden) == (4, 3, 1, None)
    assert m.evals_per_hit == 3.0 and m.diversity_ratio == pytest.approx(2 / 3)
    m.add(True, "C", True)  # second distinct hit at the 4th evaluation
    assert m.burden == 2.0 and m.diversity_ratio_at_budget == pytest.approx(3 / 4)
    m.add(True, "D", True)
    assert m.burden == 2.0 and m.diversity_ratio == pytest.approx(3 / 4)  # frozen at the budget
    assert RunningMetrics.from_state_dict(m.state_dict()) == m


def test_top_indices_only_among_mask():
    scores = np.array([0.9, 0.1, 0.8, 0.95, 0.5])
    mask = np.array([True, True, True, False, True])
    assert top_indices(scores, mask, 2) == [0, 2]


@pytest.fixture()
def sampled(make_model):
    model = make_model(timesteps=20, dtype=torch.float32)
    traj = model.sample(3, generator=torch.Generator().manual_seed(0), steps=8, return_trajectory=True)
    return model, traj


def test_split_and_restack_reproduce_the_sampled_transitions(sampled):
    model, traj = sampled
    trajs = split_trajectory(traj)
    ts = [tr.t for tr in traj.transitions]
    for s, orig in enumerate(traj.transitions):
        tr, batch, num_atoms = stack_step(trajs, s, ts)
        assert (tr.t, tr.t_prev) == (orig.t, orig.t_prev)
        for name in ("A", "F", "L", "F_mid", "A_next", "F_next", "L_next"):
            assert torch.equal(getattr(tr, name), getattr(orig, name)), name
        torch.testing.assert_close(
            transition_log_prob(model, tr, batch, num_atoms), transition_log_prob(model, orig, traj.batch, num_atoms)
        )


def test_k_of_t_subsampling_is_unbiased(sampled):
    model, traj = sampled
    trajs = split_trajectory(traj)
    ts = [tr.t for tr in traj.transitions]
    with torch.no_grad():
        per_step = torch.stack([transition_log_prob(model, *stack_step(trajs, s, ts)) for s in range(len(ts))])
    full = per_step.sum(0)  # (B,) the exact Σ_t log p
    method = MatInvent(RLConfig(kl_steps=3), model, model, ts, None, torch.Generator().manual_seed(0))
    draws = []
    for _ in range(4000):
        steps = method.draw_steps()
        assert len(steps) == 3 and len(set(steps)) == 3
        draws.append(len(ts) / len(steps) * per_step[steps].sum(0))
    draws = torch.stack(draws)
    mean, sem = draws.mean(0), draws.std(0) / len(draws) ** 0.5
    assert torch.all((mean - full).abs() < 5 * sem + 1e-6), (mean, full, sem)
    # a single draw is not the full sum (the estimator really subsamples)
    assert not torch.allclose(draws[0], full)


@pytest.fixture()
def with_prior(sampled):
    """The sampled model as agent, a perturbed copy as prior, the split trajectories and their t's."""
    model, traj = sampled
    prior = copy.deepcopy(model)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, prior, split_trajectory(traj), [tr.t for tr in traj.transitions]


def test_matinvent_loss_is_the_papers_formula(with_prior):
    """With K = T, the optimised loss equals mean_j[−α r_j Σ_t log p + β (λ − r_j) Σ_t KL] exactly."""
    from matinvent.prior.likelihood import transition_kl

    model, prior, trajs, ts = with_prior
    r = np.array([0.2, 0.9, 0.5])
    cfg = RLConfig(baseline="none", logp_reduce="sum", kl_steps=0, alpha=0.7, beta=0.3, lam=1.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    method = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0))
    stats = method.policy_step(trajs, r, r, use_kl=True)
    with torch.no_grad():
        logp = sum(transition_log_prob(model, *stack_step(trajs, s, ts)) for s in range(len(ts)))
        kl = sum(transition_kl(model, prior, *stack_step(trajs, s, ts)) for s in range(len(ts)))
    rt = torch.tensor(r, dtype=logp.dtype)
    expected = (-0.7 * rt * logp + 0.3 * (1.1 - rt) * kl).mean()
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert stats["kl"] == pytest.approx(float(kl.mean()), rel=1e-5) and float(kl.mean()) > 0


def test_batch_baseline_subtracts_the_mean_reward_from_the_policy_weight_only(with_prior):
    """baseline: batch → loss = mean_j[−α (r_j − b) Σ_t log p + β (λ − r_j) Σ_t KL], b = the batch's mean reward."""
    from matinvent.prior.likelihood import transition_kl
    from matinvent.rl.methods import Rollout

    model, prior, trajs, ts = with_prior
    r = np.array([0.2, 0.9, 0.4])
    cfg = RLConfig(logp_reduce="sum", kl_steps=0, alpha=0.7, beta=0.3, lam=1.1, topk_ratio=1.0, baseline="batch")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    method = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0))
    evaluated = np.array([True, True, True, False])  # the 4th crystal was invalid: not in the baseline
    rollout = Rollout(
        trajs + trajs[:1], [None] * 4, ["A", "B", "C", "D"], evaluated, np.r_[r, 0.0], np.r_[r, 0.0], list("abcd")
    )
    assert method.advantages(r, rollout.filtered[evaluated]) == pytest.approx(r - 0.5)
    stats = method.update(rollout, [])
    with torch.no_grad():
        logp = sum(transition_log_prob(model, *stack_step(trajs, s, ts)) for s in range(len(ts)))
        kl = sum(transition_kl(model, prior, *stack_step(trajs, s, ts)) for s in range(len(ts)))
    order = [1, 2, 0]  # top-k order: by reward, descending
    rt = torch.tensor(r[order], dtype=logp.dtype)
    expected = (-0.7 * (rt - 0.5) * logp[order] + 0.3 * (1.1 - rt) * kl[order]).mean()
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_rejected_pg_zero_puts_gated_out_crystals_in_the_update_at_reward_zero(with_prior):
    """rejected_pg: zero → the gate's rejects join top-k and baseline with r = 0; skip → the loss ignores them."""
    from matinvent.prior.likelihood import transition_kl
    from matinvent.rl.methods import Rollout

    model, prior, trajs, ts = with_prior
    r = np.array([0.2, 0.9, 0.4, 0.0, 0.0])
    evaluated = np.array([True, True, True, False, False])
    rejected = np.array([False, False, False, True, False])  # the 5th: past the budget, neither scored nor rejected
    rollout = Rollout(trajs + trajs[:2], [None] * 5, list("ABCDE"), evaluated, r, r, list("abcde"), rejected=rejected)
    with torch.no_grad():
        logp = sum(transition_log_prob(model, *stack_step(trajs + trajs[:1], s, ts)) for s in range(len(ts)))
        kl = sum(transition_kl(model, prior, *stack_step(trajs + trajs[:1], s, ts)) for s in range(len(ts)))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = {}
    for mode in ("zero", "skip"):
        cfg = RLConfig(
            logp_reduce="sum", kl_steps=0, alpha=0.7, beta=0.3, lam=1.1, topk_ratio=1.0, baseline="batch",
            rejected_pg=mode,
        )  # fmt: skip
        method = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0))
        losses[mode] = method.update(rollout, [])["loss"]
    order = [1, 2, 0, 3]  # by reward, the reject (index 3) last; index 4 never enters
    rt = torch.tensor(r[order], dtype=logp.dtype)
    b = r[:4].mean()  # 0.375: the reject's 0 lowers the baseline
    expected = (-0.7 * (rt - b) * logp[order] + 0.3 * (1.1 - rt) * kl[order]).mean()
    assert losses["zero"] == pytest.approx(float(expected), rel=1e-5)
    rt3 = rt[:3]
    skip = (-0.7 * (rt3 - 0.5) * logp[order[:3]] + 0.3 * (1.1 - rt3) * kl[order[:3]]).mean()
    assert losses["skip"] == pytest.approx(float(skip), rel=1e-5)
    assert losses["zero"] != pytest.approx(losses["skip"], rel=1e-3)
    with pytest.raises(ConfigError, match="rejected_pg"):
        validate(RLConfig(rejected_pg="negative"))


def test_normalized_baseline_of_an_all_zero_batch_still_pushes_towards_a_replayed_crystal(with_prior):
    """A hard task: nothing in the batch scores (std 0), one replayed crystal has filtered reward 0.8 (raw 0.9).
    Its PG weight is 0.8 − 0 (no std to divide by), its KL weight λ − 0.8; the batch's PG weights are 0."""
    from matinvent.prior.likelihood import transition_kl
    from matinvent.rl.methods import Rollout

    model, prior, trajs, ts = with_prior
    zero = np.zeros(3)
    rollout = Rollout(trajs, [None] * 3, list("ABC"), np.ones(3, dtype=bool), zero, zero, list("abc"))
    replay = [(ReplayEntry(key="r", formula="X", reward=0.9, filtered_reward=0.8), trajs[1])]
    cfg = RLConfig(logp_reduce="sum", kl_steps=0, alpha=0.7, beta=0.3, lam=1.1, topk_ratio=1.0, baseline="normalize")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0)).update(rollout, replay)
    rows = trajs + trajs[1:2]  # the batch in top-k order (all tied at 0: by index), then the replayed one
    with torch.no_grad():
        logp = sum(transition_log_prob(model, *stack_step(rows, s, ts)) for s in range(len(ts)))
        kl = sum(transition_kl(model, prior, *stack_step(rows, s, ts)) for s in range(len(ts)))
    r = torch.tensor([0.0, 0.0, 0.0, 0.8], dtype=logp.dtype)
    expected = (-0.7 * r * logp + 0.3 * (1.1 - r) * kl).mean()  # A = r here
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)
    without_pg = (0.3 * (1.1 - r) * kl).mean()  # what a zeroed advantage would give
    assert stats["loss"] != pytest.approx(float(without_pg), rel=1e-3)


def test_pg_components_restrict_the_policy_gradient_to_the_chosen_log_prob_terms(with_prior):
    """pg_components: [A] → loss = mean_j[−α r_j Σ_t log p_A + β (λ − r_j) Σ_t KL(all components)]."""
    from matinvent.prior.likelihood import kl_terms, log_prob_terms

    model, prior, trajs, ts = with_prior
    r = np.array([0.2, 0.9, 0.5])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    logp_a = kl = 0.0
    with torch.no_grad():
        for s in range(len(ts)):
            tr, batch, num_atoms = stack_step(trajs, s, ts)
            pp, qq = model.transition_params(tr, batch, num_atoms), prior.transition_params(tr, batch, num_atoms)
            logp_a = logp_a + log_prob_terms(pp, tr, batch, 3).get("A", torch.zeros(3))
            kl = kl + sum(kl_terms(pp, qq, batch, 3).values())
    assert bool(torch.all(logp_a != 0))  # the A terms are really there
    rt = torch.tensor(r, dtype=torch.float32)
    for comps, weight in ((["A"], 1.0), (["A", "L", "F", "F_corr"], None)):
        cfg = RLConfig(
            baseline="none", logp_reduce="sum", kl_steps=0, alpha=0.7, beta=0.3, lam=1.1, pg_components=comps
        )
        stats = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0)).policy_step(trajs, r, r, True)
        if weight is not None:
            expected = (-0.7 * rt * logp_a + 0.3 * (1.1 - rt) * kl).mean()
            assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)
            assert stats["logp"] == pytest.approx(float(logp_a.mean()), rel=1e-5)
        else:  # all components: the full log-probability, which differs from the A part alone
            assert stats["logp"] != pytest.approx(float(logp_a.mean()), rel=1e-3)


def test_ppo_clips_on_the_summed_log_prob_ratio_under_logp_reduce_mean(with_prior):
    """Stored log-probs 0.02 nat per dimension below the agent's: the per-dimension mean ratio e^(4·0.02) ≈ 1.08 would
    stay inside 1 ± 0.2, the true ratio e^(0.02·(7n + 9)) ≥ e^0.32 does not: every row (A > 0) is clipped."""
    from matinvent.rl.objective import component_log_probs

    model, prior, trajs, ts = with_prior
    with torch.no_grad():
        per_step = []
        for s in range(len(ts)):
            tr, batch, num_atoms = stack_step(trajs, s, ts)
            p = model.transition_params(tr, batch, num_atoms)
            per_step.append(component_log_probs(p, tr, batch, num_atoms, 0.0, "mean"))
    for i, t in enumerate(trajs):
        t.logp = torch.stack([lp[i] for lp in per_step]) - 0.02
        assert float((t.logp.sum(-1) - torch.stack([lp[i] for lp in per_step]).sum(-1)).abs().max()) < 0.081
    r = np.array([0.2, 0.9, 0.5])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cfg = RLConfig(baseline="none", logp_reduce="mean", kl_steps=0, ppo_clip=0.2, epochs=1)
    stats = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0)).policy_step(trajs, r, r, True)
    assert stats["clip_frac"] == 1.0
    cfg = RLConfig(baseline="none", logp_reduce="mean", kl_steps=0, ppo_clip=0.2, epochs=1, ppo_ratio="mean")
    stats = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0)).policy_step(trajs, r, r, True)
    assert stats["clip_frac"] == 0.0  # the per-dimension ratio of before: e^0.08 stays inside the clip range
    for t in trajs:
        t.logp = None
