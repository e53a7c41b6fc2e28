"""The stabilisers of Eq. 17 (``matinvent.rl.objective``): each switch changes the loss exactly as its formula says."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from matinvent.prior.diffusion_config import COMPONENTS
from matinvent.prior.likelihood import kl_terms, log_prob_terms
from matinvent.prior.transitions import TransitionParams
from matinvent.rl.config import ComponentWeights, RLConfig
from matinvent.rl.methods import MatInvent, Rollout
from matinvent.rl.objective import (
    LOG_RATIO_MAX,
    advantages,
    component_dims,
    component_kls,
    component_log_probs,
    floored,
    kl_loss,
    policy_loss,
)
from matinvent.rl.trainer import sampling_log_probs
from matinvent.rl.trajectories import split_trajectory, stack_step

STEPS = 8  # reverse steps of the sampled trajectories (T of the MDP)


# --- advantages -----------------------------------------------------------------------------------
def test_advantage_none_is_the_reward_and_batch_subtracts_the_reference_mean():
    r = np.array([0.2, 0.9, 0.4])
    ref = np.array([0.2, 0.9, 0.4, 0.1])  # the batch's evaluated rewards: more than the trained ones
    np.testing.assert_array_equal(advantages(r, ref, "none"), r)
    np.testing.assert_allclose(advantages(r, ref, "batch"), r - 0.4, atol=1e-12)
    np.testing.assert_array_equal(advantages(r, np.array([]), "batch"), r)  # no reference: no baseline
    with pytest.raises(ValueError, match="unknown baseline"):
        advantages(r, ref, "mean")


def test_advantage_normalize_divides_by_the_std_and_clips():
    ref = np.array([0.0, 0.0, 0.0, 0.0, 10.0])  # mean 2, std 4 (population)
    r = np.array([0.0, 10.0, 4.0])
    # (r − 2)/4 = [−0.5, 2.0, 0.5]; the clip at 1.5 bites on the second only
    np.testing.assert_allclose(advantages(r, ref, "normalize", clip=1.5), [-0.5, 1.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(advantages(r, ref, "normalize", clip=5.0), [-0.5, 2.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(advantages(-r, -ref, "normalize", clip=1.5), [0.5, -1.5, -0.5], atol=1e-12)


def test_advantage_normalize_of_equal_rewards_is_zero():
    out = advantages(np.array([0.7, 0.7]), np.array([0.7, 0.7, 0.7]), "normalize")
    np.testing.assert_array_equal(out, [0.0, 0.0])


def test_advantage_normalize_of_an_all_equal_batch_keeps_a_replayed_reward_above_it():
    """No std to divide by: r − mean, clipped, so a replayed 0.8 against an all-zero batch still pushes."""
    r = np.array([0.0, 0.0, 0.8])  # two batch crystals, then a replayed one
    np.testing.assert_array_equal(advantages(r, np.zeros(6), "normalize"), [0.0, 0.0, 0.8])
    np.testing.assert_array_equal(advantages(r, np.zeros(6), "normalize", clip=0.5), [0.0, 0.0, 0.5])
    # the mean of seven 0.1s is 0.1 − 1.4e-17: equal up to rounding still gets exactly 0
    ref = np.full(7, 0.1)
    out = advantages(np.r_[ref[:2], 0.05], ref, "normalize")
    np.testing.assert_array_equal(out[:2], [0.0, 0.0])
    assert out[2] == pytest.approx(-0.05, rel=1e-12)


# --- policy_loss ----------------------------------------------------------------------------------
def test_policy_loss_without_old_log_probs_is_minus_a_logp():
    logp = torch.tensor([-3.0, 2.0, 0.5])
    adv = torch.tensor([1.5, -2.0, 0.0])
    loss, ratio = policy_loss(logp, adv)
    torch.testing.assert_close(loss, torch.tensor([4.5, 4.0, 0.0]))
    torch.testing.assert_close(ratio, torch.ones(3))
    # old log-probs but no clip: still −A·log p, the ratio only reported
    loss, ratio = policy_loss(logp, adv, logp_old=logp - 0.1)
    torch.testing.assert_close(loss, torch.tensor([4.5, 4.0, 0.0]))
    torch.testing.assert_close(ratio, torch.full((3,), float(np.exp(0.1))))


# ρ, A, expected −min(ρA, clip(ρ, 0.8, 1.2)A), whether the clip is the active branch
PPO_CASES = [
    (1.1, 2.0, -2.2, False),  # inside the range
    (1.5, 2.0, -2.4, True),  # A > 0, ρ > 1 + ε: clipped at 1.2
    (0.5, 2.0, -1.0, False),  # A > 0, ρ < 1 − ε: the unclipped (smaller) term
    (1.5, -2.0, 3.0, False),  # A < 0, ρ > 1 + ε: the unclipped (more negative) term
    (0.5, -2.0, 1.6, True),  # A < 0, ρ < 1 − ε: clipped at 0.8
    (0.9, -2.0, 1.8, False),  # inside the range
]


def test_ppo_clipped_loss_on_hand_numbers_and_its_gradient():
    rho = torch.tensor([c[0] for c in PPO_CASES], dtype=torch.float64)
    adv = torch.tensor([c[1] for c in PPO_CASES], dtype=torch.float64)
    expected = torch.tensor([c[2] for c in PPO_CASES], dtype=torch.float64)
    clipped = torch.tensor([c[3] for c in PPO_CASES])
    logp_old = torch.tensor([-1.0, -2.0, 0.3, -4.0, 1.0, -0.5], dtype=torch.float64)
    logp = (logp_old + rho.log()).requires_grad_(True)
    loss, ratio = policy_loss(logp, adv, logp_old, clip=0.2)
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(ratio, rho)
    loss.sum().backward()
    # d/d log p of −ρA is −ρA; zero where the clipped branch is the one taken
    torch.testing.assert_close(logp.grad, torch.where(clipped, 0.0, -rho * adv))
    assert bool((logp.grad[clipped] == 0).all()) and bool((logp.grad[~clipped] != 0).all())


def test_ppo_rows_without_a_stored_log_prob_fall_back_to_the_plain_policy_gradient():
    logp = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
    adv = torch.tensor([2.0, 2.0, -1.0], dtype=torch.float64)
    logp_old = logp - torch.tensor([1.5, 1.5, 0.0], dtype=torch.float64).log()
    use = torch.tensor([True, False, False])
    loss, _ = policy_loss(logp, adv, logp_old, clip=0.2, use_ratio=use)
    torch.testing.assert_close(loss, torch.tensor([-2.4, 4.0, -3.0], dtype=torch.float64))


def test_ppo_gradient_stays_finite_with_huge_summed_log_probs():
    # summed log-probs of near-deterministic steps reach thousands of nats: exp(log p − 0) of a row without a
    # stored log-prob overflowed and torch.where sent 0 · inf = NaN into the gradient (found in the PPO default)
    logp = torch.tensor([3000.0, 1500.0, -2.0], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    logp_old = torch.tensor([0.0, 1400.0, -2.0], dtype=torch.float64)  # row 0 not stored; row 1 off by 100 nats
    use = torch.tensor([False, True, True])
    loss, ratio = policy_loss(logp, adv, logp_old, clip=0.2, use_ratio=use)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()
    assert float(loss[0]) == -3000.0 and float(logp.grad[0]) == -1.0  # the plain −A·log p there
    # row 1: A < 0 and ρ > 1 + ε keeps the unclipped branch, with ρ capped at exp(LOG_RATIO_MAX)
    assert float(ratio[1]) == pytest.approx(math.exp(LOG_RATIO_MAX))
    assert float(ratio[2]) == 1.0


# --- kl_loss, floored, dims -----------------------------------------------------------------------
def test_kl_loss_is_lambda_minus_r_times_the_weighted_component_sum():
    kl = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, 10.0, 1.0]])
    r = torch.tensor([0.1, 1.0])
    w = torch.tensor([1.0, 0.5, 0.1, 2.0])
    # (1.1 − 0.1)·(1 + 1 + 0.3 + 8) = 10.3;  (1.1 − 1.0)·(0.5 + 0 + 1 + 2) = 0.35
    torch.testing.assert_close(kl_loss(kl, r, 1.1, w), torch.tensor([10.3, 0.35]))


def _params(std_F_corr: float, std_F: float, std_L: float, std_A: float) -> TransitionParams:
    z = torch.zeros(2, 3)
    return TransitionParams(z, std_F_corr, z + 0.5, std_F, torch.zeros(1, 3, 3), std_L, z, std_A)


def test_floored_raises_small_sigmas_and_keeps_zero_and_large_ones():
    p = _params(1e-5, 0.0, 0.5, 1e-4)
    q = floored(p, 1e-3)
    assert (q.std_F_corr, q.std_F, q.std_L, q.std_A) == (1e-3, 0.0, 0.5, 1e-3)
    assert q.mean_F is p.mean_F and q.mean_L is p.mean_L  # the means are untouched
    assert floored(p, 0.0) is p
    assert (p.std_F_corr, p.std_A) == (1e-5, 1e-4)  # not modified in place


def test_component_dims_are_3n_3n_9_n_or_nk():
    dims = component_dims(torch.tensor([2, 5]), torch.float32)
    assert COMPONENTS == ("F_corr", "F", "L", "A")
    torch.testing.assert_close(dims, torch.tensor([[6.0, 6.0, 9.0, 2.0], [15.0, 15.0, 9.0, 5.0]]))
    gaussian = component_dims(torch.tensor([2, 5]), torch.float32, type_dims=100)  # one Gaussian per one-hot entry
    torch.testing.assert_close(gaussian[:, 3], torch.tensor([200.0, 500.0]))


# --- component log-probs and KLs on real sampled transitions ----------------------------------------
def hand_floor(p: TransitionParams, floor: float) -> TransitionParams:
    """``p`` with σ ← max(σ, floor) where σ > 0, written out independently of ``floored``."""
    stds = ("std_F_corr", "std_F", "std_L", "std_A")
    return dataclasses.replace(p, **{k: max(getattr(p, k), floor) if getattr(p, k) > 0 else 0.0 for k in stds})


def hand_dims(num_atoms: torch.Tensor, type_dims: int = 1) -> dict[str, torch.Tensor]:
    n = num_atoms.double()
    return {"F_corr": 3 * n, "F": 3 * n, "L": torch.full_like(n, 9.0), "A": n * type_dims}


@pytest.mark.parametrize("type_diffusion", ["gaussian", "masked"])
def test_component_log_probs_and_kls_match_the_raw_terms_summed_and_averaged(make_model, type_diffusion):
    model = make_model(timesteps=20, type_diffusion=type_diffusion)
    prior = copy.deepcopy(model)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype))
    traj = model.sample(3, generator=torch.Generator().manual_seed(0), steps=STEPS, return_trajectory=True)
    batch, num_atoms, B = traj.batch, traj.num_atoms, 3
    dims = hand_dims(num_atoms, model.n_types if type_diffusion == "gaussian" else 1)
    present = {c: 0 for c in COMPONENTS}
    for tr in traj.transitions:
        p = tr.params
        with torch.no_grad():
            q = prior.transition_params(tr, batch, num_atoms)
        lp_terms, kl_t = log_prob_terms(p, tr, batch, B), kl_terms(p, q, batch, B)
        lp_sum = component_log_probs(p, tr, batch, num_atoms)
        lp_mean = component_log_probs(p, tr, batch, num_atoms, reduce="mean")
        kl_sum = component_kls(p, q, batch, num_atoms)
        kl_mean = component_kls(p, q, batch, num_atoms, reduce="mean")
        assert lp_sum.shape == lp_mean.shape == kl_sum.shape == (B, len(COMPONENTS))
        for i, c in enumerate(COMPONENTS):
            want_lp = lp_terms.get(c, torch.zeros(B, dtype=torch.float64))
            want_kl = kl_t.get(c, torch.zeros(B, dtype=torch.float64))
            torch.testing.assert_close(lp_sum[:, i], want_lp)
            torch.testing.assert_close(lp_mean[:, i], want_lp / dims[c])
            torch.testing.assert_close(kl_sum[:, i], want_kl)
            torch.testing.assert_close(kl_mean[:, i], want_kl / dims[c])
            present[c] += c in lp_terms
    # every component really took part (the masked types' A term too), and the last step's F/L are deterministic
    assert all(present[c] > 0 for c in COMPONENTS), present
    last = component_log_probs(traj.transitions[-1].params, traj.transitions[-1], batch, num_atoms)
    assert bool((last[:, 1:3] == 0).all()) and bool((last[:, 0] != 0).all())
    assert bool((last[:, 3] != 0).any()) == (type_diffusion == "masked")  # masked: the final decision is stochastic


def test_sigma_floor_in_component_log_probs_uses_the_floored_gaussians(make_model):
    model = make_model(timesteps=20)
    traj = model.sample(3, generator=torch.Generator().manual_seed(0), steps=STEPS, return_trajectory=True)
    tr = traj.transitions[-2]  # a late step: σ_F ≈ 4e-3, σ_F_corr ≈ 9e-3 are below the floor
    floor = 1e-2
    assert tr.params.std_F < floor and tr.params.std_F_corr < floor < tr.params.std_L
    want = log_prob_terms(hand_floor(tr.params, floor), tr, traj.batch, 3)
    got = component_log_probs(tr.params, tr, traj.batch, traj.num_atoms, floor=floor)
    for i, c in enumerate(COMPONENTS):
        torch.testing.assert_close(got[:, i], want[c])
    raw = component_log_probs(tr.params, tr, traj.batch, traj.num_atoms)
    assert bool(((got[:, 0] - raw[:, 0]).abs() > 0.1).all())  # σ_F_corr 9e-3 → 1e-2
    assert bool((got[:, 1] < raw[:, 1] - 1.0).all())  # σ_F 4e-3 → 1e-2: a much lower density at the sampled point
    torch.testing.assert_close(got[:, 2:], raw[:, 2:])  # σ_L, σ_A above the floor: unchanged


# --- through MatInvent.policy_step / update ---------------------------------------------------------
@pytest.fixture()
def with_prior(make_model):
    """A tiny float32 agent, a perturbed copy as prior, 3 sampled trajectories and their t's."""
    model = make_model(timesteps=20, dtype=torch.float32)
    traj = model.sample(3, generator=torch.Generator().manual_seed(0), steps=STEPS, return_trajectory=True)
    prior = copy.deepcopy(model)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    return model, prior, split_trajectory(traj), [tr.t for tr in traj.transitions], traj


def hand_terms(model, prior, trajs, ts, steps, floor=0.0, mean=False, weights=None):
    """(B,) Σ_steps Σ_c log p_c and (B,) Σ_steps Σ_c w_c KL_c, floored and (optionally) per-dimension."""
    w = weights or dict.fromkeys(COMPONENTS, 1.0)
    B = len(trajs)
    logp = torch.zeros(B, dtype=torch.float64)
    kl = torch.zeros(B, dtype=torch.float64)
    with torch.no_grad():
        for s in steps:
            tr, batch, num_atoms = stack_step(trajs, s, ts)
            p = hand_floor(model.transition_params(tr, batch, num_atoms), floor)
            q = hand_floor(prior.transition_params(tr, batch, num_atoms), floor)
            type_dims = 1 if p.logp_A is not None else model.n_types
            ones = dict.fromkeys(COMPONENTS, torch.ones(B, dtype=torch.float64))
            dims = hand_dims(num_atoms, type_dims) if mean else ones
            for c, v in log_prob_terms(p, tr, batch, B).items():
                logp += v.double() / dims[c]
            for c, v in kl_terms(p, q, batch, B).items():
                kl += w[c] * v.double() / dims[c]
    return logp, kl


def sgd0(model) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.0)


def test_mean_reduce_sigma_floor_kl_weights_and_normalized_baseline_give_the_hand_loss(with_prior):
    """loss = mean_j Σ_t [−α A_j Σ_c log p_c/d_c + β (λ − r_j) Σ_c w_c KL_c/d_c] with floored σ, A normalised."""
    model, prior, trajs, ts, _ = with_prior
    r = np.array([0.2, 0.9, 0.5])
    floor, clip = 1e-2, 1.2
    cfg = RLConfig(
        kl_steps=0, alpha=0.7, beta=0.3, lam=1.1, topk_ratio=1.0, epochs=2, baseline="normalize", adv_clip=clip,
        logp_reduce="mean", sigma_floor=floor, kl_weights=ComponentWeights(L=0.1),
    )  # fmt: skip
    method = MatInvent(cfg, model, prior, ts, sgd0(model), torch.Generator().manual_seed(0))
    evaluated = np.ones(3, dtype=bool)
    rollout = Rollout(trajs, [None] * 3, ["A", "B", "C"], evaluated, r, r, list("abc"))
    stats = method.update(rollout, [])

    order = [1, 2, 0]  # top-k order: by reward, descending
    adv = np.clip((r - r.mean()) / r.std(), -clip, clip)
    assert adv.max() == clip and adv.min() > -clip  # the clip bites on the best crystal only
    w = {"F_corr": 1.0, "F": 1.0, "L": 0.1, "A": 1.0}
    logp, kl = hand_terms(model, prior, trajs, ts, range(STEPS), floor=floor, mean=True, weights=w)
    rt, at = torch.tensor(r[order]), torch.tensor(adv[order])
    expected = float((-0.7 * at * logp[order] + 0.3 * (1.1 - rt) * kl[order]).mean())
    assert stats["loss"] == pytest.approx(expected, rel=1e-4)
    assert stats["logp"] == pytest.approx(float(logp.mean()), rel=1e-4)
    assert stats["kl"] == pytest.approx(float(kl.mean()), rel=1e-4)

    # each switch matters on these numbers: the loss without it is clearly different
    variants = {
        "no floor": hand_terms(model, prior, trajs, ts, range(STEPS), mean=True, weights=w),
        "sum": hand_terms(model, prior, trajs, ts, range(STEPS), floor=floor, weights=w),
        "unit weights": hand_terms(model, prior, trajs, ts, range(STEPS), floor=floor, mean=True),
    }
    for name, (lp_v, kl_v) in variants.items():
        other = float((-0.7 * at * lp_v[order] + 0.3 * (1.1 - rt) * kl_v[order]).mean())
        assert other != pytest.approx(expected, rel=2e-3), name  # the match above is to 1e-4
    raw = np.array(r[order])
    other = float((-0.7 * torch.tensor(raw) * logp[order] + 0.3 * (1.1 - rt) * kl[order]).mean())
    assert other != pytest.approx(expected, rel=1e-2), "baseline none"


def test_skip_last_leaves_the_last_steps_out_of_the_loss(with_prior):
    model, prior, trajs, ts, _ = with_prior
    r = np.array([0.2, 0.9, 0.5])
    k = 2
    cfg = RLConfig(baseline="none", logp_reduce="sum", kl_steps=0, alpha=0.7, beta=0.3, lam=1.1, skip_last=k, epochs=1)
    method = MatInvent(cfg, model, prior, ts, sgd0(model), torch.Generator().manual_seed(0))
    stats = method.policy_step(trajs, r, r, use_kl=True)
    rt = torch.tensor(r)
    logp, kl = hand_terms(model, prior, trajs, ts, range(STEPS - k))  # scale (T − k)/K = 1 with K = T − k
    expected = float((-0.7 * rt * logp + 0.3 * (1.1 - rt) * kl).mean())
    assert stats["loss"] == pytest.approx(expected, rel=1e-4)
    logp_all, kl_all = hand_terms(model, prior, trajs, ts, range(STEPS))
    assert float((-0.7 * rt * logp_all + 0.3 * (1.1 - rt) * kl_all).mean()) != pytest.approx(expected, rel=1e-2)


def test_skip_last_with_k_of_t_draws_only_trainable_steps_scaled_by_their_count(with_prior):
    model, prior, trajs, ts, _ = with_prior
    r = np.array([0.2, 0.9, 0.5])
    cfg = RLConfig(baseline="none", logp_reduce="sum", kl_steps=3, alpha=0.7, beta=0.3, lam=1.1, skip_last=2, epochs=1)
    method = MatInvent(cfg, model, prior, ts, sgd0(model), torch.Generator().manual_seed(7))
    stats = method.policy_step(trajs, r, r, use_kl=True)
    steps = sorted(torch.randperm(STEPS - 2, generator=torch.Generator().manual_seed(7))[:3].tolist())
    rt = torch.tensor(r)
    logp, kl = hand_terms(model, prior, trajs, ts, steps)
    expected = (STEPS - 2) / 3 * float((-0.7 * rt * logp + 0.3 * (1.1 - rt) * kl).mean())
    assert stats["loss"] == pytest.approx(expected, rel=1e-4)
    seen = set()
    for _ in range(200):
        drawn = method.draw_steps()
        assert len(drawn) == 3 and max(drawn) < STEPS - 2
        seen.update(drawn)
    assert seen == set(range(STEPS - 2))  # every trainable step, none of the skipped ones


def test_replay_pg_exclude_keeps_only_the_kl_term_of_replayed_trajectories(with_prior):
    model, prior, trajs, ts, _ = with_prior
    r = np.array([0.2, 0.9, 0.5])
    replayed = np.array([False, True, True])
    rt, on = torch.tensor(r), torch.tensor(~replayed, dtype=torch.float64)
    logp, kl = hand_terms(model, prior, trajs, ts, range(STEPS))
    for mode, pg in (("exclude", on), ("include", torch.ones(3, dtype=torch.float64))):
        cfg = RLConfig(
            baseline="none", logp_reduce="sum", kl_steps=0, alpha=0.7, beta=0.3, lam=1.1, replay_pg=mode, epochs=1
        )
        method = MatInvent(cfg, model, prior, ts, sgd0(model), torch.Generator().manual_seed(0))
        stats = method.policy_step(trajs, r, r, use_kl=True, replayed=replayed)
        expected = float((-0.7 * rt * logp * pg + 0.3 * (1.1 - rt) * kl).mean())
        assert stats["loss"] == pytest.approx(expected, rel=1e-4), mode
    assert float((-0.7 * rt * logp * on).mean()) != pytest.approx(float((-0.7 * rt * logp).mean()), rel=1e-2)


# --- PPO --------------------------------------------------------------------------------------------
def ppo_setup(make_model, cfg: RLConfig):
    """A fresh tiny agent + prior and 3 trajectories carrying their sampling-time log-probs (as the trainer stores)."""
    model = make_model(timesteps=20, dtype=torch.float32)
    prior = copy.deepcopy(model)
    traj = model.sample(3, generator=torch.Generator().manual_seed(0), steps=STEPS, return_trajectory=True)
    logp = sampling_log_probs(traj, cfg)
    trajs = split_trajectory(traj)
    for i, t in enumerate(trajs):
        t.logp = logp[:, i].clone()
    return model, prior, trajs, [tr.t for tr in traj.transitions]


def ratios(model, trajs, ts, cfg) -> torch.Tensor:
    """(S, B) exp(log p_now − log p_stored) over all components."""
    out = []
    with torch.no_grad():
        for s in range(len(ts)):
            tr, batch, num_atoms = stack_step(trajs, s, ts)
            p = model.transition_params(tr, batch, num_atoms)
            now = component_log_probs(p, tr, batch, num_atoms, cfg.sigma_floor, cfg.logp_reduce).sum(-1)
            out.append(torch.exp(now - torch.stack([t.logp[s] for t in trajs]).sum(-1)))
    return torch.stack(out)


PPO = dict(kl_steps=0, ppo_clip=0.2, logp_reduce="mean", sigma_floor=1e-2)


def test_ppo_ratio_is_one_on_the_first_epoch(make_model):
    cfg = RLConfig(**PPO, epochs=1)
    model, prior, trajs, ts = ppo_setup(make_model, cfg)
    assert all(t.logp.shape == (STEPS, len(COMPONENTS)) for t in trajs)
    torch.testing.assert_close(ratios(model, trajs, ts, cfg), torch.ones(STEPS, 3), atol=1e-4, rtol=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0)).policy_step(
        trajs, np.array([0.2, 0.9, 0.5]), np.array([-1.0, 1.0, 0.5]), use_kl=True
    )
    assert stats["clip_frac"] == 0.0


def test_ppo_ratio_moves_off_one_in_later_epochs(make_model):
    adv, r = np.array([-1.0, 1.0, 0.5]), np.array([0.2, 0.9, 0.5])
    cfg = RLConfig(**PPO, epochs=3)
    model, prior, trajs, ts = ppo_setup(make_model, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    stats = MatInvent(cfg, model, prior, ts, opt, torch.Generator().manual_seed(0)).policy_step(
        trajs, r, adv, use_kl=True
    )
    # the first epoch clips nothing (see above), so the clipping comes from the updated agent's live ratio
    assert stats["clip_frac"] > 0
    assert float((ratios(model, trajs, ts, cfg) - 1).abs().max()) > 0.2


def test_dual_clip_bounds_a_negative_advantage_and_stops_its_gradient():
    logp_old = torch.tensor([0.0, 0.0], dtype=torch.float64)
    logp = torch.tensor([math.log(5.0), math.log(2.0)], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([-2.0, -2.0], dtype=torch.float64)
    loss, ratio = policy_loss(logp, adv, logp_old, clip=0.2)
    # ρ = 5: −min(−10, −2.4) = 10, bounded by −3·A = 6; ρ = 2 < 3: PPO's 4, gradient −ρA = 4
    torch.testing.assert_close(loss.detach(), torch.tensor([6.0, 4.0], dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 4.0], dtype=torch.float64))


def test_the_ratio_is_the_true_likelihood_ratio_when_log_probs_are_per_dimension_means():
    # 30 dimensions: the per-dimension mean moved by 0.1 nat, the summed log-prob (the true one) by 3 nats
    dims = 30.0
    old_sum = torch.tensor([-60.0, -60.0], dtype=torch.float64)
    now_sum = (old_sum + torch.tensor([3.0, 0.09], dtype=torch.float64)).requires_grad_(True)
    now_mean = now_sum / dims
    adv = torch.tensor([1.0, 1.0], dtype=torch.float64)
    loss, ratio = policy_loss(now_mean, adv, old_sum, clip=0.2, ratio_logp=now_sum)
    torch.testing.assert_close(ratio, torch.tensor([math.exp(3.0), math.exp(0.09)], dtype=torch.float64))
    loss.sum().backward()
    # row 0: ρ = e³ ≫ 1.2 with A > 0: clipped, no gradient (exp of the mean difference, e^0.1, would not clip);
    # row 1: inside, gradient −ρA through the per-dimension mean: −e^0.09 / 30 on the summed log-prob
    torch.testing.assert_close(now_sum.grad, torch.tensor([0.0, -math.exp(0.09) / dims], dtype=torch.float64))
    torch.testing.assert_close(loss.detach(), -torch.minimum(ratio, torch.clamp(ratio, 0.8, 1.2)) * adv)
