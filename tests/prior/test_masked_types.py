"""Masked (absorbing-state) atom-type diffusion: exact categorical log-probs and KLs, carry-over, loss."""

from __future__ import annotations

import pytest
import torch
from model_utils import perturbed
from torch.distributions import Categorical, kl_divergence

from matinvent.crystal.batch import CrystalBatch
from matinvent.crystal.record import Crystal
from matinvent.diffusion import AbsorbingSchedule
from matinvent.prior.checkpoint import load_prior, save_prior
from matinvent.prior.likelihood import kl_terms, log_prob_terms, transition_kl, transition_log_prob

f64 = torch.float64
T = 20


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def model(make_model):
    return make_model(timesteps=T, type_diffusion="masked")


@pytest.fixture
def traj(model):
    return model.sample(4, generator=gen(0), return_trajectory=True)


def step_distribution(model, tr, batch, num_atoms) -> Categorical:
    """Per-atom distribution over the K elements + mask of A_{t_prev}, built from the raw type head."""
    K = model.n_types
    tt = torch.full((tr.L.shape[0],), tr.t, dtype=torch.long)
    _, _, type_out = model.denoiser(tr.A, tr.F_mid, tr.L, tt, batch, num_atoms)
    ab = model.absorbing.alphas
    a_t, a_prev = float(ab[tr.t]), float(ab[tr.t_prev])
    u = (a_prev - a_t) / (1 - a_t)
    p0 = torch.softmax(type_out, dim=-1)
    probs = torch.cat([u * p0, torch.full((len(p0), 1), 1 - u, dtype=f64)], dim=-1)
    masked = tr.A[:, K] == 1
    copy_rows = torch.nn.functional.one_hot(tr.A.argmax(-1), K + 1).to(f64)
    return Categorical(probs=torch.where(masked[:, None], probs, copy_rows))


def per_crystal(x, batch, B):
    return torch.stack([x[batch == b].sum() for b in range(B)])


def test_schedule_masks_everything_at_T_and_nothing_at_0():
    for kind in ("linear", "cosine"):
        s = AbsorbingSchedule(100, kind)
        assert float(s.alphas[0]) == 1.0 and float(s.alphas[-1]) == 0.0
        assert torch.all(s.alphas[1:] < s.alphas[:-1])
        assert s.unmask_prob(1, 0) == 1.0
        # Chaining the per-step decisions reproduces the marginal: P(still masked at s | masked at t)
        stay = (1 - s.unmask_prob(80, 50)) * (1 - s.unmask_prob(50, 20))
        assert stay == pytest.approx((1 - float(s.alphas[20])) / (1 - float(s.alphas[80])), rel=1e-12)


def test_sampling_starts_fully_masked_and_ends_fully_decided(model, traj):
    K = model.n_types
    first, last = traj.transitions[0], traj.transitions[-1]
    assert torch.all(first.A[:, K] == 1)
    assert torch.all(last.A_next[:, K] == 0)
    assert torch.equal(traj.final.Z, last.A_next[:, :K].argmax(-1) + 1)
    assert traj.final.Z.min() >= 1 and traj.final.Z.max() <= K


def test_a_type_once_unmasked_never_changes(model):
    K = model.n_types
    traj = model.sample(6, generator=gen(3), return_trajectory=True)
    states = [tr.A for tr in traj.transitions] + [traj.transitions[-1].A_next]
    decided_at = {}
    for s, A in enumerate(states):
        for i in torch.nonzero(A[:, K] == 0).flatten().tolist():
            decided_at.setdefault(i, (s, int(A[i].argmax())))
    for i, (s0, k) in decided_at.items():
        for A in states[s0:]:
            assert A[i, K] == 0 and int(A[i].argmax()) == k
    # atoms really are decided at different steps, not all at the end
    assert len({s for s, _ in decided_at.values()}) > 3


@pytest.mark.parametrize("index", [0, 5, 12, 18, 19])
def test_type_log_prob_matches_independent_categorical(model, traj, index):
    tr = traj.transitions[index]
    p = model.transition_params(tr, traj.batch, traj.num_atoms)
    terms = log_prob_terms(p, tr, traj.batch, 4)
    dist = step_distribution(model, tr, traj.batch, traj.num_atoms)
    ref = per_crystal(dist.log_prob(tr.A_next.argmax(-1)), traj.batch, 4)
    torch.testing.assert_close(terms["A"], ref, rtol=1e-10, atol=1e-10)
    if index == 19:  # the last step decides every remaining atom: a real categorical, not deterministic
        assert p.unmask_A == 1.0 and p.masked_A.any() and torch.all(terms["A"] <= 0)


def test_full_transition_log_prob_includes_the_type_term(model, traj):
    tr = traj.transitions[10]
    p = model.transition_params(tr, traj.batch, traj.num_atoms)
    terms = log_prob_terms(p, tr, traj.batch, 4)
    torch.testing.assert_close(transition_log_prob(model, tr, traj.batch, traj.num_atoms), sum(terms.values()))


def test_type_kl_is_zero_for_the_same_model_and_matches_torch_after_a_perturbation(model, traj):
    other = perturbed(model, 0.05)
    checked = 0
    for tr in traj.transitions:
        p = model.transition_params(tr, traj.batch, traj.num_atoms)
        q = other.transition_params(tr, traj.batch, traj.num_atoms)
        same = kl_terms(p, p, traj.batch, 4)["A"]
        assert torch.all(same.abs() < 1e-12)
        kl = kl_terms(p, q, traj.batch, 4)["A"]
        ref = per_crystal(
            kl_divergence(
                step_distribution(model, tr, traj.batch, traj.num_atoms),
                step_distribution(other, tr, traj.batch, traj.num_atoms),
            ),
            traj.batch,
            4,
        )
        torch.testing.assert_close(kl, ref, rtol=1e-8, atol=1e-10)
        if p.masked_A.any():
            assert torch.all(kl >= -1e-12) and kl.sum() > 0
            checked += 1
    assert checked > 5
    tr = traj.transitions[-1]
    assert torch.all(transition_kl(model, model, tr, traj.batch, traj.num_atoms).abs() < 1e-12)


def test_type_log_prob_is_differentiable(model, traj):
    tr = traj.transitions[-1]
    p = model.transition_params(tr, traj.batch, traj.num_atoms)
    lp = log_prob_terms(p, tr, traj.batch, 4)["A"]
    lp.sum().backward()
    g = model.denoiser.type_out.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_sampled_unmasking_rate_matches_the_schedule(make_model):
    model = make_model(timesteps=T, type_diffusion="masked", max_atoms=8)
    traj = model.sample(200, generator=gen(1), steps=5, return_trajectory=True)
    K = model.n_types
    tr = traj.transitions[1]
    masked = tr.A[:, K] == 1
    decided = (tr.A_next[:, K] == 0) & masked
    u = model.absorbing.unmask_prob(tr.t, tr.t_prev)
    rate = float(decided.sum() / masked.sum())
    n = int(masked.sum())
    assert abs(rate - u) < 4 * (u * (1 - u) / n) ** 0.5


def test_forward_masking_and_loss(model, structures):
    batch = CrystalBatch.from_crystals([Crystal.from_structure(s) for s in structures], dtype=f64)
    nb = model.noise(batch, gen(0))
    K = model.n_types
    assert torch.equal(nb.type_masked, nb.A_t[:, K] == 1)
    unmasked = ~nb.type_masked
    assert torch.equal(nb.A_t[unmasked, :K].argmax(-1) + 1, batch.Z[unmasked])
    model.train()
    losses = model.loss(batch, generator=gen(0))
    assert torch.isfinite(losses["loss"]) and losses["loss_type"] >= 0
    losses["loss"].backward()
    assert model.denoiser.type_out.weight.grad.abs().sum() > 0
    per = model.loss(batch, generator=gen(0), per_crystal=True)
    assert per["loss_type"].shape == (3,)
    # the per-crystal CE sums to the batch CE × masked atoms / atoms of each crystal
    n_masked = float(nb.type_masked.sum())
    total = float((per["loss_type"].detach() * batch.num_atoms.to(f64)).sum())
    assert total == pytest.approx(float(losses["loss_type"]) * n_masked, rel=1e-10)


def test_forward_mask_fraction_follows_alpha(model):
    from matinvent.prior import masked_types as mt

    Z = torch.randint(1, 90, (20000,), generator=gen(2))
    t = torch.full((20000,), 7)
    A, masked = mt.mask_types(Z, t, model.absorbing, model.n_types, gen(3), f64)
    assert float(masked.float().mean()) == pytest.approx(1 - float(model.absorbing.alphas[7]), abs=0.015)


def test_masked_prior_round_trips_through_a_checkpoint(model, tmp_path):
    save_prior(model, tmp_path / "ckpt")
    back = load_prior(tmp_path / "ckpt").to(f64)
    assert back.masked_types and back.config.type_diffusion == "masked"
    a = model.sample(3, generator=gen(9))
    b = back.sample(3, generator=gen(9))
    assert torch.equal(a.final.Z, b.final.Z)
    torch.testing.assert_close(a.final.L, b.final.L)
