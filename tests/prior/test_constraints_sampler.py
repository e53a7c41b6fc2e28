"""Constraints inside the sampler: every sample satisfies them, and the log-probs/KLs are the masked ones.

The sequential rule (max distinct elements, chemical system) is checked against an independent
per-atom reference built from torch's ``Categorical`` and ``kl_divergence``.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from ase.data import chemical_symbols
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_utils import perturbed
from torch.distributions import Categorical, kl_divergence

from matinvent.crystal.constraints import ChemConstraints
from matinvent.diffusion import respaced_timesteps
from matinvent.prior.checkpoint import load_prior
from matinvent.prior.denoiser import DenoiserConfig
from matinvent.prior.diffusion_config import DiffusionConfig
from matinvent.prior.likelihood import kl_terms, log_prob_terms, transition_kl, transition_log_prob
from matinvent.prior.model import CrystalDiffusion
from matinvent.prior.sampler import constrained, sample_crystals
from matinvent.prior.type_constraints import masked_kl, masked_log_probs
from matinvent.rl.natoms import NatomsPolicy
from matinvent.rl.trajectories import split_trajectory, stack_step

FAST = settings(
    max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
POOL = ["H", "Li", "C", "O", "Na", "Mg", "Si", "P", "S", "Cl", "K", "Ti", "Fe", "Cu", "Ba", "U"]
ALL_100 = ",".join(chemical_symbols[1:101])
STEPS = 8


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.cache
def tiny(type_diffusion: str) -> CrystalDiffusion:
    """A 1-layer prior over 100 elements drawing 2..8 atoms (shared: use it under ``constrained``)."""
    torch.manual_seed(0)
    model = CrystalDiffusion(
        DenoiserConfig(hidden=16, layers=1, n_freq=4, time_dim=16),
        DiffusionConfig(timesteps=20, max_atoms=8, type_diffusion=type_diffusion),
    ).double()
    counts = torch.ones(9, dtype=torch.float64)
    counts[:2] = 0.0
    model.set_natoms_histogram(counts)
    return model.eval()


def crystals_of(traj) -> list[list[str]]:
    Z, b = traj.final.Z.tolist(), traj.batch.tolist()
    return [[chemical_symbols[z] for z, i in zip(Z, b, strict=True) if i == k] for k in range(len(traj.num_atoms))]


@st.composite
def constraint_sets(draw) -> ChemConstraints:
    """Random valid constraint sets over ``POOL`` (every key sometimes set)."""
    chemsys = draw(st.none() | st.sets(st.sampled_from(POOL), min_size=1, max_size=3))
    elements = None if chemsys else draw(st.none() | st.sets(st.sampled_from(POOL), min_size=1, max_size=6))
    exclude = draw(st.sets(st.sampled_from(POOL), max_size=4)) - (chemsys or set())
    if elements:
        exclude -= {sorted(elements)[0]}  # keep one element allowed
    need = len(chemsys or ())
    k = draw(st.none() | st.integers(1, 4))
    natoms = draw(
        st.none() | st.tuples(st.integers(2, 8), st.integers(0, 6)).map(lambda t: (t[0], min(t[0] + t[1], 8)))
    )
    return ChemConstraints(
        elements=elements,
        exclude=exclude,
        chemsys="-".join(sorted(chemsys)) if chemsys else None,
        max_elements=None if k is None else max(k, need),
        natoms=None if natoms is None else (max(natoms[0], need), max(natoms[1], need)),
    )


@FAST
@given(spec=constraint_sets(), seed=st.integers(0, 2**16), type_diffusion=st.sampled_from(["masked", "gaussian"]))
def test_every_sample_satisfies_random_constraints(spec, seed, type_diffusion):
    model = tiny(type_diffusion)
    with constrained(model, spec):
        traj = model.sample(6, generator=gen(seed), steps=STEPS)
    for atoms in crystals_of(traj):
        assert spec.allows(atoms), (spec, atoms)


def test_the_default_prior_samples_inside_a_chemical_system():
    # mp20_masked: masked types; mp20_small/mp20_base are x0-predicted Gaussian one-hots, as tiny("gaussian")
    spec = ChemConstraints(chemsys="Li-Fe-P-O", natoms=(4, 10))
    model = load_prior("mp20_masked")
    crystals = sample_crystals(model, 4, seed=0, steps=4, progress=False, constraints=spec)
    assert model.constraint is None  # restored after sampling
    for c in crystals:
        assert c is not None and spec.allows([chemical_symbols[z] for z in c.Z])


@pytest.mark.parametrize("type_diffusion", ["masked", "gaussian"])
def test_a_constraint_that_excludes_nothing_reproduces_the_free_sampler(type_diffusion):
    model = tiny(type_diffusion)
    free = model.sample(5, generator=gen(3), steps=STEPS, return_trajectory=True)
    for spec in (ChemConstraints(elements=ALL_100), ChemConstraints(elements=ALL_100, max_elements=100)):
        with constrained(model, spec):
            same = model.sample(5, generator=gen(3), steps=STEPS, return_trajectory=True)
        assert torch.equal(free.final.Z, same.final.Z) and torch.equal(free.final.F, same.final.F)
        assert all(torch.equal(a.A_next, b.A_next) for a, b in zip(free.transitions, same.transitions, strict=True))


def test_a_chemical_system_with_as_many_atoms_as_elements_uses_each_once():
    model = tiny("masked")
    spec = ChemConstraints(chemsys="Li-Fe-P-O", natoms=(4, 4))
    with constrained(model, spec):
        traj = model.sample(8, generator=gen(1), steps=STEPS)
    assert all(sorted(atoms) == ["Fe", "Li", "O", "P"] for atoms in crystals_of(traj))


# --- exactness of the masked types' log-probs and KLs --------------------------------------------
SEQUENTIAL = ChemConstraints(elements="H,Li,C,O,Na,Si,P,Fe", exclude="C", max_elements=2, natoms=(3, 7))
CHEMSYS = ChemConstraints(chemsys="Li-O-P", max_elements=3)


def reference_type_terms(p, q, tr, batch, spec: ChemConstraints, K: int):
    """(B,) log p and KL of the type step by hand: atoms in order, each a masked ``Categorical``."""
    allowed_z = {chemical_symbols.index(s) - 1 for s in spec.allowed}
    required = {chemical_symbols.index(s) - 1 for s in spec.required}
    masked_t = tr.A[:, K] == 1
    u = p.unmask_A
    B = int(batch.max()) + 1
    logp, kl = torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        atoms = (batch == b).nonzero().squeeze(-1).tolist()
        present = {int(tr.A[i].argmax()) for i in atoms if not masked_t[i]}
        undecided = sum(bool(masked_t[i]) for i in atoms)
        for i in atoms:
            if not masked_t[i]:
                continue
            missing = required - present
            if len(missing) > undecided - 1:
                ok = missing
            elif spec.max_elements is not None and len(present) >= spec.max_elements:
                ok = present & allowed_z
            else:
                ok = allowed_z
            mask = torch.zeros(K, dtype=torch.bool)
            mask[sorted(ok)] = True
            cat_p = Categorical(logits=p.logp_A[i].masked_fill(~mask, -math.inf))
            cat_q = Categorical(logits=q.logp_A[i].masked_fill(~mask, -math.inf))
            kl[b] += u * kl_divergence(cat_p, cat_q)
            x = int(tr.A_next[i].argmax())
            if x == K:
                logp[b] += math.log1p(-u) if u < 1 else -math.inf
            else:
                assert x in ok, "the sampler drew an element the rule forbids"
                logp[b] += math.log(u) + cat_p.log_prob(torch.tensor(x))
                present.add(x)
                undecided -= 1
    return logp, kl


@pytest.mark.parametrize("spec", [SEQUENTIAL, CHEMSYS], ids=["max_elements", "chemsys"])
def test_type_log_prob_and_kl_equal_an_independent_per_atom_reference(spec):
    model = tiny("masked")
    agent = perturbed(model, 0.05)
    total_kl = 0.0
    with constrained(model, spec), constrained(agent, spec):
        traj = agent.sample(6, generator=gen(7), steps=STEPS, return_trajectory=True)
        B, K = 6, model.n_types
        for tr in traj.transitions:
            p = agent.transition_params(tr, traj.batch, traj.num_atoms)
            q = model.transition_params(tr, traj.batch, traj.num_atoms)
            ref_lp, ref_kl = reference_type_terms(p, q, tr, traj.batch, spec, K)
            torch.testing.assert_close(log_prob_terms(p, tr, traj.batch, B)["A"], ref_lp, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(kl_terms(p, q, traj.batch, B)["A"], ref_kl, rtol=1e-9, atol=1e-12)
            total_kl += float(ref_kl.detach().sum())
            # the sampler recorded the same allowed sets the stored transition implies
            assert torch.equal(tr.params.allowed_A, p.allowed_A)
    assert total_kl > 0  # the two models differ


@pytest.mark.parametrize("spec", [SEQUENTIAL, CHEMSYS, ChemConstraints(elements="Li,Fe,P,O")])
def test_log_prob_recomputed_from_stored_trajectories_equals_the_sampling_time_one(spec):
    model = tiny("masked")
    free_model = perturbed(model, 0.0)  # the same weights, unconstrained
    with constrained(model, spec):
        traj = model.sample(5, generator=gen(2), steps=STEPS, return_trajectory=True)
        trajs = split_trajectory(traj)
        ts = respaced_timesteps(model.config.timesteps, STEPS)
        free_differs = False
        for s, tr in enumerate(traj.transitions):
            recorded = sum(log_prob_terms(tr.params, tr, traj.batch, 5).values())
            stored, batch, num_atoms = stack_step(trajs, s, ts)  # as training rebuilds it
            recomputed = transition_log_prob(model, stored, batch, num_atoms)
            torch.testing.assert_close(recomputed, recorded, rtol=1e-10, atol=1e-10)
            free = transition_log_prob(free_model, stored, batch, num_atoms)
            free_differs |= not torch.allclose(free, recorded)
    assert free_differs  # the mask changes the log-probs (renormalised over fewer elements)


def test_kl_between_identical_models_under_the_same_mask_is_zero_and_gradients_are_finite():
    model = tiny("masked")
    agent = perturbed(model, 0.05)
    with constrained(model, SEQUENTIAL), constrained(agent, SEQUENTIAL):
        traj = model.sample(4, generator=gen(4), steps=STEPS, return_trajectory=True)
        twin = perturbed(model, 0.0)
        for tr in traj.transitions:
            assert torch.all(transition_kl(model, twin, tr, traj.batch, traj.num_atoms).abs() < 1e-12)
        tr = traj.transitions[STEPS // 2]
        loss = transition_log_prob(agent, tr, traj.batch, traj.num_atoms).sum()
        loss = loss + transition_kl(agent, model, tr, traj.batch, traj.num_atoms).sum()
        loss.backward()
    grads = [p.grad for p in agent.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_masked_categorical_matches_torch():
    g = gen(0)
    logits = torch.randn(7, 10, generator=g, dtype=torch.float64)
    other = torch.randn(7, 10, generator=g, dtype=torch.float64)
    allowed = torch.rand(7, 10, generator=g) < 0.4
    allowed[:, 3] = True
    lp = masked_log_probs(torch.log_softmax(logits, -1), allowed)
    p = Categorical(logits=logits.masked_fill(~allowed, -math.inf))
    q = Categorical(logits=other.masked_fill(~allowed, -math.inf))
    x = torch.multinomial(allowed.double(), 1, generator=g).squeeze(-1)  # an allowed element per row
    torch.testing.assert_close(lp.gather(-1, x[:, None]).squeeze(-1), p.log_prob(x))
    torch.testing.assert_close(masked_kl(logits, other, allowed), kl_divergence(p, q))
    assert torch.all(lp[~allowed] == -math.inf)
    assert torch.allclose(masked_kl(logits, logits, allowed), torch.zeros(7, dtype=torch.float64))


def test_gaussian_types_mask_the_clean_type_estimate_and_keep_exact_gaussian_log_probs():
    model = tiny("gaussian")
    spec = ChemConstraints(elements="Li,Fe,P,O", max_elements=2)
    with constrained(model, spec):
        traj = model.sample(4, generator=gen(5), steps=STEPS, return_trajectory=True)
        tr = traj.transitions[2]
        recorded = sum(log_prob_terms(tr.params, tr, traj.batch, 4).values())
        rebuilt = type(tr)(**{**tr.__dict__, "params": None})
        torch.testing.assert_close(transition_log_prob(model, rebuilt, traj.batch, traj.num_atoms), recorded)
        tt = torch.full((4,), tr.t, dtype=torch.long)
        logits = model.predict(tr.A, tr.F, tr.L, tt, traj.batch, traj.num_atoms, return_type_logits=True)[3]
    allowed = torch.zeros(model.n_types, dtype=torch.bool)
    allowed[[2, 25, 14, 7]] = True  # Li, Fe, P, O (Z − 1)
    assert torch.all(torch.softmax(logits, -1)[:, ~allowed] == 0)


# --- the atom count -----------------------------------------------------------------------------
def test_atom_counts_come_from_the_renormalised_masked_histogram():
    model = tiny("masked")
    with constrained(model, ChemConstraints(natoms=(3, 5))):
        n = model.sample_num_atoms(400, gen(0))
        with pytest.raises(ValueError, match=r"atom counts \[8\] violate"):
            model.sample(1, num_atoms=torch.tensor([8]), steps=2)
    assert set(n.tolist()) == {3, 4, 5}


def test_natoms_policy_log_prob_and_kl_are_the_masked_ones():
    prior = torch.tensor([0.0, 0.0, 0.1, 0.2, 0.3, 0.15, 0.15, 0.1], dtype=torch.float64)
    allowed = torch.zeros(8, dtype=torch.bool)
    allowed[3:6] = True
    policy = NatomsPolicy(prior, allowed)
    q = torch.where(allowed, prior, torch.zeros_like(prior))
    q = q / q.sum()
    n = torch.tensor([3, 4, 5])
    torch.testing.assert_close(policy.log_prob(n), Categorical(probs=q.float()).log_prob(n))
    assert float(policy.kl().detach()) == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        policy.logits.add_(torch.randn(8, generator=gen(1)))
    p = Categorical(logits=policy.logits.detach().masked_fill(~allowed, -math.inf))
    torch.testing.assert_close(policy.kl(), kl_divergence(p, Categorical(probs=q.float())))
    assert set(policy.sample(300, gen(2)).tolist()) <= {3, 4, 5}
    policy.kl().backward()
    assert torch.isfinite(policy.logits.grad).all() and torch.all(policy.logits.grad[~allowed] == 0)
    with pytest.raises(ValueError, match="allowed counts"):
        NatomsPolicy(prior, torch.arange(8) < 2)


def test_stored_gaussian_trajectories_decode_to_the_sampled_crystals():
    model = tiny("gaussian")
    spec = ChemConstraints(chemsys="Li-Fe-O", natoms=(3, 6))
    with constrained(model, spec):
        traj = model.sample(5, generator=gen(6), steps=STEPS, return_trajectory=True)
        decoded = [  # one crystal at a time, as rl.methods.trajectory_crystal rebuilds weighted-denoising's crystals
            model.decode_types(t.A[-1], torch.zeros(t.num_atoms, dtype=torch.long), torch.tensor([t.num_atoms]))
            for t in split_trajectory(traj)
        ]
    expected = [[chemical_symbols.index(s) for s in atoms] for atoms in crystals_of(traj)]
    assert [z.tolist() for z in decoded] == expected and all(spec.allows(atoms) for atoms in crystals_of(traj))
