"""Recomputing several reverse steps in one network call (``transition_params_many``, ``recompute_chunk``).

The reference is the sampler itself: the parameters it used at each step come from separate network
calls at a single t each, so a stacking or un-stacking error (wrong offsets, a t given to the wrong
crystals, corrector and predictor outputs swapped) shows up as a mismatch.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from matinvent.crystal.constraints import ChemConstraints
from matinvent.rl.config import RLConfig
from matinvent.rl.methods import MatInvent, Rollout
from matinvent.rl.trajectories import split_trajectory

FIELDS = ("mean_F_corr", "mean_F", "mean_L", "mean_A", "logp_A", "allowed_A")
STD_FIELDS = ("std_F_corr", "std_F", "std_L", "std_A", "unmask_A")


def sampled(model, n=4, seed=0):
    return model.sample(n, generator=torch.Generator().manual_seed(seed), return_trajectory=True)


@pytest.mark.parametrize("kind", ["gaussian", "masked", "masked+constraints"])
def test_stacked_parameters_equal_the_samplers_per_step_parameters(make_model, kind):
    model = make_model(timesteps=20, type_diffusion="gaussian" if kind == "gaussian" else "masked")
    if kind == "masked+constraints":
        model.set_constraints(ChemConstraints(elements=["Li", "Fe", "P", "O"], natoms=(3, 8)))
    traj = sampled(model)
    steps = [0, 1, 7, 13, 19]  # the first (σ largest), middle and the last (deterministic F/L) steps
    trs = [traj.transitions[s] for s in steps]
    got = model.transition_params_many(trs, traj.batch, traj.num_atoms)
    assert len(got) == len(steps)
    for s, tr, p in zip(steps, trs, got, strict=True):
        for name in FIELDS:
            want = getattr(tr.params, name)
            if want is None:
                assert getattr(p, name) is None, (kind, s, name)
            elif want.dtype == torch.bool:
                assert torch.equal(getattr(p, name), want), (kind, s, name)
            else:
                torch.testing.assert_close(getattr(p, name), want, rtol=0, atol=1e-10, msg=f"{kind} step {s} {name}")
        for name in STD_FIELDS:
            assert getattr(p, name) == getattr(tr.params, name), (kind, s, name)


def test_no_transitions_give_no_parameters(make_model):
    model = make_model()
    traj = sampled(model, n=2)
    assert model.transition_params_many([], traj.batch, traj.num_atoms) == []


def _update(model, prior, trajs, ts, chunk: int):
    cfg = RLConfig(kl_steps=0, recompute_chunk=chunk, topk_ratio=1.0, epochs=1, lr=1e-3)
    agent = copy.deepcopy(model)
    opt = torch.optim.SGD(agent.parameters(), lr=1e-2)
    method = MatInvent(cfg, agent, prior, ts, opt, torch.Generator().manual_seed(0))
    r = np.array([0.1, 0.8, 0.4, 0.6])
    rollout = Rollout(trajs, [None] * 4, list("ABCD"), np.ones(4, dtype=bool), r, r, list("abcd"))
    stats = method.update(rollout, [])
    return stats, [p.detach().clone() for p in agent.parameters()]


def test_the_update_is_the_same_whatever_the_chunk_size(make_model):
    """One call per step (chunk 1), three steps per call, all 20 in one call: same loss, same new weights."""
    model = make_model(timesteps=20, dtype=torch.float64, type_diffusion="masked")
    prior = copy.deepcopy(model)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    traj = sampled(model)
    trajs, ts = split_trajectory(traj), [tr.t for tr in traj.transitions]
    ref_stats, ref_params = _update(model, prior, trajs, ts, chunk=1)
    moved = sum(float((a - b.detach()).abs().sum()) for a, b in zip(ref_params, model.parameters(), strict=True))
    assert moved > 1e-4  # the update changed the agent, so equal weights below mean equal gradients
    for chunk in (3, 0):
        stats, params = _update(model, prior, trajs, ts, chunk=chunk)
        assert stats["loss"] == pytest.approx(ref_stats["loss"], rel=1e-9)
        assert stats["kl"] == pytest.approx(ref_stats["kl"], rel=1e-9)
        for a, b in zip(params, ref_params, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_the_priors_parameters_are_computed_once_per_step_whatever_the_epochs(make_model):
    model = make_model(timesteps=20, dtype=torch.float64)
    prior = copy.deepcopy(model)
    traj = sampled(model)
    trajs, ts = split_trajectory(traj), [tr.t for tr in traj.transitions]
    seen: list[int] = []
    inner = prior.transition_params_many

    def counting(trs, batch, num_atoms):
        seen.extend(tr.t for tr in trs)
        return inner(trs, batch, num_atoms)

    prior.transition_params_many = counting
    cfg = RLConfig(kl_steps=0, topk_ratio=1.0, epochs=3)
    method = MatInvent(cfg, copy.deepcopy(model), prior, ts, torch.optim.SGD(model.parameters(), lr=0.0), None)
    r = np.array([0.1, 0.8, 0.4, 0.6])
    method.update(Rollout(trajs, [None] * 4, list("ABCD"), np.ones(4, dtype=bool), r, r, list("abcd")), [])
    assert sorted(seen) == sorted(ts)  # 20 steps once each, not 3 × 20
