"""The crystal diffusion prior: loss, sampler, transition likelihoods/KL, and checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from model_utils import perturbed
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.nn import functional as Fn
from wrapped_normal_ref import wrapped_normal_kl_quad

from matinvent.config_io import ConfigError
from matinvent.crystal.batch import CrystalBatch
from matinvent.crystal.record import Crystal
from matinvent.diffusion import respaced_timesteps, wrap_centered
from matinvent.prior.checkpoint import checkpoint_info, load_prior, save_prior
from matinvent.prior.likelihood import kl_terms, log_prob_terms, transition_kl, transition_log_prob

f64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def model(make_model):
    return make_model(timesteps=20)


@pytest.fixture
def traj(model):
    return model.sample(3, generator=gen(0), return_trajectory=True)


@pytest.fixture
def clean_batch(structures) -> CrystalBatch:
    return CrystalBatch.from_crystals([Crystal.from_structure(s) for s in structures], dtype=f64)


# --- independent reference densities --------------------------------------------------------------
def wrapped_normal_logpdf_ref(x: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """log Σ_k N(x − mean + k; 0, std²), summed over a wide window of images.

    x is wrapped to [0, 1) but ``mean`` is not, so x − mean can approach ±1: the window is wider than
    the ±3 images the library keeps around the nearest image, to make this the more accurate of the two.
    """
    k = torch.arange(-6, 7, dtype=x.dtype)
    z = (x - mean).unsqueeze(-1) + k
    std = torch.as_tensor(std, dtype=x.dtype)
    std = std.unsqueeze(-1) if std.dim() else std
    return torch.logsumexp(Normal(torch.zeros((), dtype=x.dtype), std).log_prob(z), dim=-1)


def per_crystal(x: torch.Tensor, batch: torch.Tensor, B: int) -> torch.Tensor:
    return torch.stack([x[batch == b].sum() for b in range(B)])


def log_prob_ref(tr, batch: torch.Tensor) -> torch.Tensor:
    """log p(F_mid, M_{t_prev} | M_t) from the stored actions and stored parameters only."""
    p, B = tr.params, tr.L.shape[0]
    lp = per_crystal(wrapped_normal_logpdf_ref(tr.F_mid, p.mean_F_corr, p.std_F_corr), batch, B)
    if p.std_F > 0:
        lp = lp + per_crystal(wrapped_normal_logpdf_ref(tr.F_next, p.mean_F, p.std_F), batch, B)
    if p.std_L > 0:
        lp = lp + Normal(p.mean_L, p.std_L).log_prob(tr.L_next).sum(dim=(1, 2))
    if p.std_A > 0:
        lp = lp + per_crystal(Normal(p.mean_A, p.std_A).log_prob(tr.A_next), batch, B)
    return lp


# --- loss -----------------------------------------------------------------------------------------------
def test_loss_is_finite_and_backprops(model, clean_batch):
    model.train()
    losses = model.loss(clean_batch, generator=gen(0))
    assert set(losses) == {"loss", "loss_lattice", "loss_coord", "loss_type"}
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v) and v > 0
    c = model.config
    expected = c.cost_lattice * losses["loss_lattice"] + c.cost_coord * losses["loss_coord"]
    expected = expected + c.cost_type * losses["loss_type"]
    torch.testing.assert_close(losses["loss"], expected, rtol=1e-14, atol=0)
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) == len(grads)


def test_loss_is_reproducible_with_a_generator(model, clean_batch):
    a = model.loss(clean_batch, generator=gen(3))
    b = model.loss(clean_batch, generator=gen(3))
    c = model.loss(clean_batch, generator=gen(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["loss"], c["loss"])


class _OracleDenoiser(nn.Module):
    """Knows the clean crystals, so it can return the exact noise / normalised score of any noisy input."""

    def __init__(self, model, clean: CrystalBatch) -> None:
        super().__init__()
        self.m, self.clean = model, clean

    def forward(self, A, F, L, t, batch, num_atoms):
        ab = self.m.beta.alphas_cumprod[t]
        L0 = self.clean.L / num_atoms.to(f64).pow(1 / 3).view(-1, 1, 1)  # documented per-atom lattice frame
        eps_L = (L - ab.sqrt().view(-1, 1, 1) * L0) / (1 - ab).sqrt().view(-1, 1, 1)
        A0 = Fn.one_hot(self.clean.Z - 1, A.shape[1]).to(f64)
        ab_atom = ab[batch].view(-1, 1)
        eps_A = (A - ab_atom.sqrt() * A0) / (1 - ab_atom).sqrt()
        sig = self.m.sigma.sigmas[t][batch].view(-1, 1)
        Fg = F.detach().clone().requires_grad_(True)
        (score,) = torch.autograd.grad(wrapped_normal_logpdf_ref(Fg, self.clean.F, sig).sum(), Fg)
        return eps_L, score / self.m.sigma_norm[t - 1][batch].sqrt().view(-1, 1), eps_A


def test_oracle_denoiser_has_zero_loss(model, clean_batch):
    """The loss targets are the true noise of L and A and the true wrapped-normal score of F."""
    model.denoiser = _OracleDenoiser(model, clean_batch)
    model.config.type_prediction = "eps"  # the oracle returns ε_A itself
    for seed in range(3):
        losses = model.loss(clean_batch, generator=gen(seed))
        assert float(losses["loss_lattice"]) < 1e-20
        assert float(losses["loss_type"]) < 1e-20
        assert float(losses["loss_coord"]) < 1e-12


# --- sampling -----------------------------------------------------------------------------------------
def test_sampling_is_seeded(model):
    a = model.sample(4, generator=gen(11)).final
    b = model.sample(4, generator=gen(11)).final
    c = model.sample(4, generator=gen(12)).final
    for k in ("Z", "F", "L", "num_atoms", "batch"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    same_shape = a.F.shape == c.F.shape
    assert not (same_shape and torch.equal(a.F, c.F) and torch.equal(a.L, c.L))
    assert not torch.equal(a.L, c.L)


def test_sampled_crystals_are_valid(model):
    final = model.sample(5, generator=gen(1)).final
    assert final.F.dtype == f64
    assert torch.all(final.F >= 0) and torch.all(final.F < 1)
    assert torch.all((final.Z >= 1) & (final.Z <= 100))
    assert torch.all((final.num_atoms >= 2) & (final.num_atoms <= model.config.max_atoms))
    assert final.batch.tolist() == [i for i, n in enumerate(final.num_atoms.tolist()) for _ in range(n)]


def test_num_atoms_follow_histogram(model):
    n = model.sample_num_atoms(4000, generator=gen(0))
    freq = torch.bincount(n, minlength=len(model.natoms_prob)).to(f64) / len(n)
    assert freq[0] == 0 and freq[1] == 0
    torch.testing.assert_close(freq, model.natoms_prob, rtol=0, atol=0.03)


def test_given_num_atoms_are_used(model):
    final = model.sample(2, generator=gen(0), num_atoms=torch.tensor([3, 7]), steps=2).final
    assert final.num_atoms.tolist() == [3, 7] and final.F.shape == (10, 3)


def test_respaced_sampling_visits_five_transitions(model):
    calls = []
    traj = model.sample(2, generator=gen(2), steps=5, return_trajectory=True, progress=calls.append)
    assert len(traj.transitions) == 5
    assert calls == [1] * 5
    ts = respaced_timesteps(20, 5)
    assert [tr.t for tr in traj.transitions] == ts
    assert [tr.t_prev for tr in traj.transitions] == ts[1:] + [0]
    # Without a trajectory nothing is stored, but the same noise gives the same crystals.
    plain = model.sample(2, generator=gen(2), steps=5)
    assert plain.transitions == []
    assert torch.equal(plain.final.F, traj.final.F) and torch.equal(plain.final.L, traj.final.L)


def test_trajectory_is_a_consistent_chain(model, traj):
    trs = traj.transitions
    assert [tr.t for tr in trs] == list(range(20, 0, -1))
    for a, b in zip(trs, trs[1:], strict=False):
        assert a.t_prev == b.t
        assert torch.equal(a.A_next, b.A) and torch.equal(a.F_next, b.F) and torch.equal(a.L_next, b.L)
    last = trs[-1]
    final = traj.final
    assert torch.equal(final.Z, last.A_next.argmax(-1) + 1)
    assert torch.equal(final.F, last.F_next)
    scale = final.num_atoms.to(f64).pow(1 / 3).view(-1, 1, 1)
    torch.testing.assert_close(final.L, last.L_next * scale, rtol=1e-15, atol=0)
    for tr in trs:
        for F in (tr.F, tr.F_mid, tr.F_next):
            assert torch.all(F >= 0) and torch.all(F < 1)


def test_final_transition_is_deterministic(traj):
    last = traj.transitions[-1]
    p = last.params
    assert last.t_prev == 0
    assert p.std_L == 0.0 and p.std_A == 0.0 and p.std_F == 0.0
    assert p.std_F_corr > 0
    assert torch.equal(last.L_next, p.mean_L)
    assert torch.equal(last.A_next, p.mean_A)
    torch.testing.assert_close(wrap_centered(last.F_next - p.mean_F), torch.zeros_like(p.mean_F), rtol=0, atol=1e-15)
    for tr in traj.transitions[:-1]:
        assert tr.params.std_L > 0 and tr.params.std_A > 0 and tr.params.std_F > 0


def test_transition_noise_is_standard_normal(traj):
    """The stored actions are mean + std · z with z ~ N(0, 1), over all non-final transitions."""
    zs = []
    for tr in traj.transitions[:-1]:
        p = tr.params
        zs += [
            (wrap_centered(tr.F_mid - p.mean_F_corr) / p.std_F_corr).flatten(),
            (wrap_centered(tr.F_next - p.mean_F) / p.std_F).flatten(),
            ((tr.L_next - p.mean_L) / p.std_L).flatten(),
            ((tr.A_next - p.mean_A) / p.std_A).flatten(),
        ]
    z = torch.cat(zs)
    assert len(z) > 10000
    assert abs(float(z.mean())) < 0.05
    assert float(z.std()) == pytest.approx(1.0, abs=0.05)


# --- likelihoods ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", [0, 1, 9, 18, 19])
def test_transition_log_prob_matches_independent_computation(model, traj, index):
    tr = traj.transitions[index]
    # The model is unchanged, so recomputed parameters are the stored ones.
    p = model.transition_params(tr, traj.batch, traj.num_atoms)
    for name in ("mean_F_corr", "mean_F", "mean_L", "mean_A"):
        torch.testing.assert_close(getattr(p, name), getattr(tr.params, name), rtol=0, atol=1e-12, msg=name)
    for name in ("std_F_corr", "std_F", "std_L", "std_A"):
        assert getattr(p, name) == getattr(tr.params, name), name
    lp = transition_log_prob(model, tr, traj.batch, traj.num_atoms)
    assert lp.shape == (3,) and lp.dtype == f64
    torch.testing.assert_close(lp, log_prob_ref(tr, traj.batch), rtol=1e-12, atol=1e-8)


def test_transition_log_prob_is_differentiable(model, traj):
    tr = traj.transitions[10]
    lp = transition_log_prob(model, tr, traj.batch, traj.num_atoms)
    assert lp.requires_grad
    lp.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    nonzero = [n for n, g in grads.items() if g.abs().sum() > 0]
    assert len(nonzero) == len(grads), set(grads) - set(nonzero)
    # The gradient is the true derivative: compare with central finite differences on two weights.
    for name, idx in (("denoiser.lattice_out.weight", (4, 7)), ("denoiser.coord_out.weight", (1, 3))):
        param = dict(model.named_parameters())[name]
        h = 1e-6
        with torch.no_grad():
            param[idx] += h
            up = float(transition_log_prob(model, tr, traj.batch, traj.num_atoms).sum())
            param[idx] -= 2 * h
            down = float(transition_log_prob(model, tr, traj.batch, traj.num_atoms).sum())
            param[idx] += h
        assert float(grads[name][idx]) == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_kl_of_model_with_itself_is_exactly_zero(model, traj):
    for tr in traj.transitions[::3] + traj.transitions[-1:]:
        kl = transition_kl(model, model, tr, traj.batch, traj.num_atoms)
        assert kl.shape == (3,)
        assert torch.equal(kl, torch.zeros(3, dtype=f64))


@pytest.mark.parametrize("index", [0, 10, 19])
def test_kl_grows_with_weight_perturbation(model, traj, index):
    tr = traj.transitions[index]
    small = transition_kl(perturbed(model, 1e-2), model, tr, traj.batch, traj.num_atoms)
    large = transition_kl(perturbed(model, 1e-1), model, tr, traj.batch, traj.num_atoms)
    assert torch.all(small > 0)
    assert torch.all(large > small)


@pytest.mark.parametrize("index", [0, 3, 19])
def test_kl_matches_quadrature_and_torch_gaussian_kl(model, traj, index):
    """F terms: the wrapped-normal KL by quadrature per coordinate; L and A: torch's Gaussian KL.

    Index 0 is the first step (corrector σ ≈ 0.45), where the Gaussian KL of the wrapped mean
    difference the F terms once used is ≈170× too large; 19 is the last (corrector σ ≈ 0.0045).
    """
    tr = traj.transitions[index]
    other = perturbed(model, 1e-2)
    kl = transition_kl(other, model, tr, traj.batch, traj.num_atoms)
    p = other.transition_params(tr, traj.batch, traj.num_atoms)
    q = model.transition_params(tr, traj.batch, traj.num_atoms)

    def wrapped_kl(mp, mq, std):
        pairs = zip(mp.detach().flatten().tolist(), mq.detach().flatten().tolist(), strict=True)
        return torch.tensor([wrapped_normal_kl_quad(a, b, std) for a, b in pairs], dtype=f64).view(mp.shape)

    def normal_kl(mp, mq, std):
        return kl_divergence(Normal(mp, std), Normal(mq, std))

    ref = per_crystal(wrapped_kl(p.mean_F_corr, q.mean_F_corr, p.std_F_corr), traj.batch, 3)
    if p.std_F > 0:
        ref = ref + per_crystal(wrapped_kl(p.mean_F, q.mean_F, p.std_F), traj.batch, 3)
    if p.std_L > 0:
        ref = ref + normal_kl(p.mean_L, q.mean_L, p.std_L).sum(dim=(1, 2))
    if p.std_A > 0:
        ref = ref + per_crystal(normal_kl(p.mean_A, q.mean_A, p.std_A), traj.batch, 3)
    torch.testing.assert_close(kl, ref.detach(), rtol=1e-6, atol=0.0)


def test_kl_gradient_flows_to_model_only(model, traj):
    other = perturbed(model, 1e-2)
    kl = transition_kl(other, model, traj.transitions[5], traj.batch, traj.num_atoms)
    kl.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in other.denoiser.parameters())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("index", [0, 10, 19])
def test_component_terms_split_the_totals(model, traj, index):
    """log_prob_terms / kl_terms name each stochastic component and add up to the totals."""
    tr = traj.transitions[index]
    other = perturbed(model, 1e-2)
    p = other.transition_params(tr, traj.batch, traj.num_atoms)
    q = model.transition_params(tr, traj.batch, traj.num_atoms)
    lp, kl = log_prob_terms(p, tr, traj.batch, 3), kl_terms(p, q, traj.batch, 3)
    expected = {"F_corr"} | {c for c, s in (("F", p.std_F), ("L", p.std_L), ("A", p.std_A)) if s > 0}
    assert set(lp) == set(kl) == expected
    assert (index == 19) == (expected == {"F_corr"})  # the last step is deterministic but for the corrector
    torch.testing.assert_close(sum(lp.values()), transition_log_prob(other, tr, traj.batch, traj.num_atoms))
    torch.testing.assert_close(sum(kl.values()), transition_kl(other, model, tr, traj.batch, traj.num_atoms))
    assert all(bool(torch.all(v >= 0)) for v in kl.values())
    ref_L = kl_divergence(Normal(p.mean_L, p.std_L), Normal(q.mean_L, p.std_L)).sum(dim=(1, 2)) if "L" in kl else None
    if ref_L is not None:
        torch.testing.assert_close(kl["L"], ref_L.detach())


# --- checkpoints --------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_samples(tmp_path, make_model):
    model = make_model(timesteps=20, seed=3, dtype=torch.float32)
    save_prior(model, tmp_path / "prior", info={"note": "test", "steps": 7})
    loaded = load_prior(tmp_path / "prior")
    assert not loaded.training
    assert loaded.denoiser_config == model.denoiser_config and loaded.config == model.config
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    a = model.sample(3, generator=gen(9), steps=6).final
    b = loaded.sample(3, generator=gen(9), steps=6).final
    for k in ("Z", "F", "L", "num_atoms"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert checkpoint_info(tmp_path / "prior") == {"note": "test", "steps": 7}
    config = json.loads((tmp_path / "prior" / "config.json").read_text())
    assert config["natoms_prob"] == pytest.approx(model.natoms_prob.tolist(), abs=0)


@pytest.mark.parametrize("keep", [[], ["config.json"], ["model.safetensors"]])
def test_load_prior_on_incomplete_folder(tmp_path, make_model, keep):
    save_prior(make_model(timesteps=20), tmp_path / "full")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in keep:
        (partial / name).write_bytes((tmp_path / "full" / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="not a matinvent checkpoint"):
        load_prior(partial)


def test_load_prior_on_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_prior(tmp_path / "does-not-exist")


def test_load_prior_rejects_corrupt_config(tmp_path, make_model):
    save_prior(make_model(timesteps=20), tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_prior(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"denoiser": {}}))
    with pytest.raises(ConfigError, match="diffusion"):
        load_prior(tmp_path)


def test_load_prior_names_shape_mismatch(tmp_path, make_model):
    save_prior(make_model(timesteps=20), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["denoiser"]["hidden"] = 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="do not match"):
        load_prior(tmp_path)


# --- parametrisations ---------------------------------------------------------------------------------
def _noisy_types(model, batch: CrystalBatch, t: int, seed: int = 0):
    tt = torch.full((batch.num_graphs,), t, dtype=torch.long)
    A0 = Fn.one_hot(batch.Z - 1, model.n_types).to(f64)
    eps = torch.randn(A0.shape, generator=gen(seed), dtype=f64)
    A_t = model.beta.add_noise(A0, eps, tt[batch.batch].view(-1, 1))
    return tt, A_t, eps


def test_x0_type_prediction_recovers_noise_near_t0_untrained(model, clean_batch):
    """With x0 logits + per-atom Bayes logits, ε̂_A is exact at small t even for random weights."""
    assert model.config.type_prediction == "x0"
    b = clean_batch
    tt, A_t, eps = _noisy_types(model, b, t=1)
    _, _, eps_hat = model.predict(A_t, b.F, b.L, tt, b.batch, b.num_atoms)
    assert torch.allclose(eps_hat, eps, atol=1e-6)
    model.config.type_prediction = "eps"  # the plain ε head of the same random network is far off
    _, _, eps_hat = model.predict(A_t, b.F, b.L, tt, b.batch, b.num_atoms)
    assert (eps_hat - eps).pow(2).mean() > 0.1


def test_x0_type_prediction_matches_its_formula(model, clean_batch):
    b = clean_batch
    tt, A_t, _ = _noisy_types(model, b, t=model.config.timesteps // 2)
    _, _, logits = model.denoiser(A_t, b.F, b.L, tt, b.batch, b.num_atoms)
    ab = model.beta.alphas_cumprod[tt[0]]
    A0_hat = torch.softmax(logits + ab.sqrt() / (1 - ab) * A_t, dim=-1)
    _, _, eps_hat = model.predict(A_t, b.F, b.L, tt, b.batch, b.num_atoms)
    assert torch.allclose(eps_hat, (A_t - ab.sqrt() * A0_hat) / (1 - ab).sqrt(), atol=1e-12)


def test_lattice_clip_bounds_the_first_respaced_step(model):
    """The implied x̂0 of a lattice step is clamped: the mean stays bounded even when c0 ≈ 300."""
    step = model.beta.step(model.config.timesteps, 1)
    L_t = torch.randn(4, 3, 3, generator=gen(0), dtype=f64)
    wild = 50.0 * torch.randn(4, 3, 3, generator=gen(1), dtype=f64)
    unclipped = step.mean(L_t, wild)
    clipped = step.mean(L_t, wild, clip=model.config.clip_lattice)
    bound = step.coef_x0 * model.config.clip_lattice + step.coef_xt * L_t.abs().max()
    assert clipped.abs().max() <= bound + 1e-9
    assert unclipped.abs().max() > 10 * bound
    assert torch.allclose(step.mean(L_t, L_t * 0.3, clip=1e9), step.mean(L_t, L_t * 0.3), atol=1e-9)


def test_auxiliary_type_cross_entropy_is_added_with_its_weight(model, clean_batch):
    assert "loss_type_ce" not in model.loss(clean_batch, generator=gen(0))  # off by default
    model.config.cost_type_ce = 0.5
    out = model.loss(clean_batch, generator=gen(0))
    c = model.config
    plain = c.cost_lattice * out["loss_lattice"] + c.cost_coord * out["loss_coord"] + c.cost_type * out["loss_type"]
    assert torch.allclose(out["loss"], plain + 0.5 * out["loss_type_ce"])
    assert 0 < out["loss_type_ce"].item() < 2 * torch.log(torch.tensor(100.0))
