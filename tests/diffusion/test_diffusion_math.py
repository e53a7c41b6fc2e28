"""Generic diffusion math against textbook formulas and independent references."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import IntegrationWarning
from torch.distributions import Normal, kl_divergence
from wrapped_normal_ref import wrapped_normal_kl_quad

from matinvent.diffusion import (
    CosineBetaSchedule,
    GeometricSigmaSchedule,
    gaussian_kl_same_std,
    gaussian_log_prob,
    respaced_timesteps,
    wrap,
    wrap_centered,
    wrapped_normal_kl_same_std,
    wrapped_normal_log_prob,
    wrapped_normal_score,
    wrapped_normal_score_norm,
)

f64 = torch.float64


# --- wrapped normal -----------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2, 0.5, 0.8])
def test_wrapped_normal_score_is_gradient_of_log_prob(sigma):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, generator=gen, dtype=f64)
    mean = 3.0 * torch.rand(200, generator=gen, dtype=f64) - 1.0  # means outside [0, 1) too
    h = 1e-4 * sigma
    fd = (wrapped_normal_log_prob(x + h, mean, sigma) - wrapped_normal_log_prob(x - h, mean, sigma)) / (2 * h)
    score = wrapped_normal_score(x, mean, sigma)
    torch.testing.assert_close(score, fd, rtol=1e-6, atol=1e-6 / sigma)
    # Autograd agrees as well.
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(wrapped_normal_log_prob(xg, mean, sigma).sum(), xg)
    torch.testing.assert_close(score, grad, rtol=1e-10, atol=1e-10 / sigma)


def test_wrapped_normal_tensor_std_broadcasts():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, generator=gen, dtype=f64)
    mean = torch.rand(6, 3, generator=gen, dtype=f64)
    std = torch.tensor([0.01, 0.05, 0.1, 0.3, 0.5, 0.7], dtype=f64).view(-1, 1)
    lp = wrapped_normal_log_prob(x, mean, std)
    sc = wrapped_normal_score(x, mean, std)
    for i in range(6):
        s = float(std[i])
        torch.testing.assert_close(lp[i], wrapped_normal_log_prob(x[i], mean[i], s), rtol=1e-14, atol=0)
        torch.testing.assert_close(sc[i], wrapped_normal_score(x[i], mean[i], s), rtol=1e-14, atol=0)


@pytest.mark.parametrize("sigma, tol", [(0.05, 1e-9), (0.7, 1e-5)])
@pytest.mark.parametrize("mean", [0.0, 0.3, 1.7, -0.45])
def test_wrapped_normal_density_integrates_to_one(sigma, tol, mean):
    n = 4000
    x = (torch.arange(n, dtype=f64) + 0.5) / n  # periodic midpoint rule: spectrally accurate
    density = wrapped_normal_log_prob(x, torch.full_like(x, mean), sigma).exp()
    assert float(density.mean()) == pytest.approx(1.0, abs=tol)


def test_wrapped_normal_matches_plain_normal_for_small_sigma():
    x = torch.tensor([0.30, 0.31, 0.28], dtype=f64)
    mean = torch.full_like(x, 0.3)
    torch.testing.assert_close(
        wrapped_normal_log_prob(x, mean, 0.01), Normal(mean, 0.01).log_prob(x), rtol=1e-12, atol=1e-12
    )


def test_wrapped_normal_is_periodic_in_x_and_mean():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(50, generator=gen, dtype=f64)
    mean = torch.rand(50, generator=gen, dtype=f64)
    base = wrapped_normal_log_prob(x, mean, 0.3)
    torch.testing.assert_close(wrapped_normal_log_prob(x + 2.0, mean - 1.0, 0.3), base, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        wrapped_normal_score(x - 3.0, mean, 0.3), wrapped_normal_score(x, mean, 0.3), rtol=1e-10, atol=1e-10
    )


def test_wrap_ranges():
    gen = torch.Generator().manual_seed(3)
    x = torch.cat(
        [
            20 * torch.randn(1000, generator=gen, dtype=f64),
            torch.tensor([-1e-20, -1e-300, 0.0, 1.0, 2.0, -3.0, 0.5, -0.5, 1.5, -1.5], dtype=f64),
        ]
    )
    y = wrap(x)
    assert torch.all(y >= 0) and torch.all(y < 1)
    k = x - y
    torch.testing.assert_close(k, torch.round(k), rtol=0, atol=1e-13)
    c = wrap_centered(x)
    assert torch.all(c >= -0.5) and torch.all(c < 0.5)
    k = x - c
    torch.testing.assert_close(k, torch.round(k), rtol=0, atol=1e-13)
    assert wrap(torch.tensor([-1e-20], dtype=f64)).item() == 0.0
    assert wrap_centered(torch.tensor([0.5, -0.5, 0.25], dtype=f64)).tolist() == [-0.5, -0.5, 0.25]
    # float32 as well
    y32 = wrap(torch.tensor([-1e-10, -3.25, 7.0], dtype=torch.float32))
    assert torch.all(y32 >= 0) and torch.all(y32 < 1)


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.05])
def test_score_norm_small_sigma(sigma):
    norm = wrapped_normal_score_norm(torch.tensor([sigma], dtype=f64))
    assert float(norm[0]) == pytest.approx(1.0 / sigma**2, rel=0.03)


def test_score_norm_large_sigma_is_below_gaussian_value():
    # For wide wrapped normals the density flattens, so E[score²] falls well below 1/σ².
    norm = wrapped_normal_score_norm(torch.tensor([0.5, 1.0], dtype=f64))
    assert float(norm[0]) < 0.8 / 0.5**2
    assert float(norm[1]) < 0.01


# --- wrapped-normal KL ------------------------------------------------------------------------------
# σ of the sampler's F sub-steps (defaults σ_1 = 0.005, σ_T = 0.5, step_lr = 1e-5, T = 1000): the corrector's
# √(2 step_lr) σ_t/σ_1 runs over [0.0045, 0.447]; the predictor's over [4.8e-4, 0.048] with all 1000 steps and
# [0.0028, 0.233] with 25. 0.0499/0.05 straddle the switch between the function's two forms.
SAMPLER_SIGMAS = [4.8e-4, 2.8e-3, 4.47e-3, 0.02, 0.0499, 0.05, 0.1, 0.233, 0.447]
WIDE_SIGMAS = [0.6, 0.8, pytest.param(1.0, marks=pytest.mark.filterwarnings("ignore", category=IntegrationWarning))]
MEAN_DIFFS = [0.003, 0.05, 0.2, 0.45, 0.499, 0.5, -0.31, 1.27]  # 1.27 and −0.31: wrapped by the function


def kl64(delta: float, sigma: float, base: float = 0.83) -> float:
    mean_q = torch.tensor(base, dtype=f64)
    return float(wrapped_normal_kl_same_std(mean_q + delta, mean_q, sigma))


@pytest.mark.parametrize("sigma", SAMPLER_SIGMAS + WIDE_SIGMAS)
def test_wrapped_normal_kl_matches_quadrature(sigma):
    """Against ∫ p log(p/q) over a period (scipy quad, numpy image sums): KL from 1e-21 (σ = 1) to 5e5 (σ = 5e-4)."""
    for delta in MEAN_DIFFS:
        expected = wrapped_normal_kl_quad(0.83 + delta, 0.83, sigma)
        assert kl64(delta, sigma) == pytest.approx(expected, rel=1e-6), delta


@pytest.mark.parametrize("sigma", [4.8e-4, 4.47e-3, 0.02, 0.049])
def test_wrapped_normal_kl_is_the_gaussian_kl_of_the_wrapped_difference_for_small_sigma(sigma):
    """Up to a few σ short of |δ| = ½ the other images of q weigh nothing: torch's Gaussian KL of the wrapped δ."""
    mean_q = torch.linspace(-1.5, 1.5, 41, dtype=f64)
    delta = torch.linspace(-(0.5 - 8 * sigma), 0.5 - 8 * sigma, 41, dtype=f64)
    zero = torch.zeros_like(delta)
    expected = kl_divergence(Normal(delta, sigma), Normal(zero, sigma))
    got = wrapped_normal_kl_same_std(mean_q + delta + 3.0, mean_q, sigma)  # + 3 periods
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-300)
    # right at ½ the second image of q does count: the KL is below the Gaussian value
    half = torch.tensor([0.5], dtype=f64)
    assert float(wrapped_normal_kl_same_std(half, zero[:1], sigma)) < 0.999 * 0.125 / sigma**2


def test_gaussian_kl_of_the_wrapped_difference_overstates_wide_wrapped_normals():
    """The former F-term KL: ≈170× too large at the first corrector step (σ = 0.447), 1.0001× at σ = 0.1."""
    for sigma, low, high in ((0.447, 150.0, 250.0), (0.1, 1.0, 1.001)):
        for delta in (0.01, 0.05):
            gaussian = float(gaussian_kl_same_std(wrap_centered(torch.tensor(delta, dtype=f64)), 0.0, sigma))
            exact = wrapped_normal_kl_quad(delta, 0.0, sigma)
            assert low < gaussian / exact < high
            assert kl64(delta, sigma, base=0.0) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_wrapped_normal_kl_is_zero_at_equal_means_and_positive_elsewhere(dtype):
    gen = torch.Generator().manual_seed(6)
    mean_q = (4.0 * torch.rand(500, generator=gen, dtype=f64) - 2.0).to(dtype)
    tiny = torch.logspace(-9, -2, 100, dtype=f64)
    delta = torch.cat([tiny, -tiny, torch.linspace(-0.5, 0.5, 300, dtype=f64)]).to(dtype)
    for sigma in SAMPLER_SIGMAS + [0.6, 1.0]:
        assert torch.equal(wrapped_normal_kl_same_std(mean_q, mean_q, sigma), torch.zeros_like(mean_q))
        kl = wrapped_normal_kl_same_std(delta, torch.zeros_like(delta), sigma)
        assert torch.all(kl[delta != 0] > 0), sigma


def test_wrapped_normal_kl_is_even_and_periodic_in_the_mean_difference():
    gen = torch.Generator().manual_seed(8)
    delta = torch.rand(300, generator=gen, dtype=f64) - 0.5
    zero = torch.zeros_like(delta)
    for sigma in SAMPLER_SIGMAS + [0.6, 1.0]:
        kl = wrapped_normal_kl_same_std(delta, zero, sigma)
        torch.testing.assert_close(wrapped_normal_kl_same_std(-delta, zero, sigma), kl, rtol=1e-12, atol=0.0)
        shifted = wrapped_normal_kl_same_std(delta + 2.25, torch.full_like(delta, -0.75), sigma)  # δ + 3
        torch.testing.assert_close(shifted, kl, rtol=1e-9, atol=0.0)  # δ + 3 − 3 loses ~1e-15 of δ


@pytest.mark.parametrize("sigma", [0.02, 0.447])
def test_wrapped_normal_kl_in_float32_agrees_with_float64(sigma):
    delta = torch.linspace(-0.5, 0.5, 201, dtype=f64)
    kl = wrapped_normal_kl_same_std(delta, torch.zeros_like(delta), sigma)
    kl32 = wrapped_normal_kl_same_std(delta.float(), torch.zeros(201), sigma)
    assert kl32.dtype == torch.float32
    torch.testing.assert_close(kl32.double(), kl, rtol=1e-5, atol=0.0)


def test_wrapped_normal_kl_tensor_std_broadcasts():
    gen = torch.Generator().manual_seed(7)
    mean_p, mean_q = torch.rand(5, 3, generator=gen, dtype=f64), torch.rand(5, 3, generator=gen, dtype=f64)
    std = torch.tensor([4.8e-4, 0.02, 0.05, 0.2, 0.447], dtype=f64).view(-1, 1)  # both forms in one call
    kl = wrapped_normal_kl_same_std(mean_p, mean_q, std)
    for i in range(5):
        assert torch.equal(kl[i], wrapped_normal_kl_same_std(mean_p[i], mean_q[i], float(std[i])))


@pytest.mark.parametrize("sigma", [4.8e-4, 0.02, 0.0499, 0.05, 0.233, 0.447])
def test_wrapped_normal_kl_gradcheck(sigma):
    """Autograd in both means agrees with finite differences, in both forms and near |δ| = ½ too."""
    delta = torch.tensor([0.0013, -0.04, 0.21, -0.37, 0.4999, 0.52], dtype=f64)
    mean_q = torch.tensor([0.1, 0.9, -0.3, 0.5, 1.7, 0.0], dtype=f64)
    args = ((mean_q + delta).requires_grad_(True), mean_q.clone().requires_grad_(True))

    def f(mean_p, mean_q):
        return wrapped_normal_kl_same_std(mean_p, mean_q, sigma)

    scale = float(f(*args).detach().abs().max())
    assert torch.autograd.gradcheck(f, args, eps=1e-6 * sigma, atol=1e-7 * scale)


# --- Gaussian ------------------------------------------------------------------------------------------
def test_gaussian_log_prob_matches_torch():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 5, generator=gen, dtype=f64)
    mean = torch.randn(7, 5, generator=gen, dtype=f64)
    std = torch.rand(7, 1, generator=gen, dtype=f64) + 0.05
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), Normal(mean, std).log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gaussian_log_prob(x, mean, 0.3), Normal(mean, 0.3).log_prob(x), rtol=1e-12, atol=1e-12)


def test_gaussian_kl_same_std_matches_torch():
    gen = torch.Generator().manual_seed(5)
    mp = torch.randn(4, 6, generator=gen, dtype=f64)
    mq = torch.randn(4, 6, generator=gen, dtype=f64)
    for std in (0.1, torch.rand(4, 1, generator=gen, dtype=f64) + 0.1):
        expected = kl_divergence(Normal(mp, std), Normal(mq, std))
        torch.testing.assert_close(gaussian_kl_same_std(mp, mq, std), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(gaussian_kl_same_std(mp, mp, 0.1), torch.zeros_like(mp))


# --- schedules -----------------------------------------------------------------------------------------
def test_cosine_schedule_tables():
    sch = CosineBetaSchedule(1000)
    ab = sch.alphas_cumprod
    assert ab.shape == (1001,) and sch.betas.shape == (1001,)
    assert ab[0] == 1.0 and sch.betas[0] == 0.0
    assert torch.all(ab[1:] < ab[:-1])
    assert float(ab[-1]) < 1e-6
    assert torch.all(sch.betas[1:] > 0) and torch.all(sch.betas <= 0.999)
    # Nichol & Dhariwal: ᾱ_t = f(t)/f(0) wherever β is not clipped.
    t = torch.arange(1001, dtype=f64)
    f = torch.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(ab[:990], (f / f[0])[:990], rtol=1e-10, atol=0)


def test_add_noise_matches_formula():
    sch = CosineBetaSchedule(50)
    gen = torch.Generator().manual_seed(6)
    x0, eps = torch.randn(3, 4, generator=gen, dtype=f64), torch.randn(3, 4, generator=gen, dtype=f64)
    t = torch.tensor([1, 25, 50]).view(-1, 1)
    out = sch.add_noise(x0, eps, t)
    for i, ti in enumerate([1, 25, 50]):
        ab = sch.alphas_cumprod[ti]
        torch.testing.assert_close(out[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("t", [1, 2, 10, 500, 999, 1000])
def test_single_ddpm_step_matches_textbook(t):
    sch = CosineBetaSchedule(1000)
    beta, ab, ab_prev = float(sch.betas[t]), float(sch.alphas_cumprod[t]), float(sch.alphas_cumprod[t - 1])
    step = sch.step(t, t - 1)
    assert step.c0 == pytest.approx(1 / math.sqrt(1 - beta), rel=1e-10)
    assert step.c1 == pytest.approx(beta / math.sqrt(1 - ab), rel=1e-10)
    assert step.std == pytest.approx(math.sqrt(beta * (1 - ab_prev) / (1 - ab)), rel=1e-10, abs=1e-300)
    x, e = torch.tensor([0.7], dtype=f64), torch.tensor([-0.2], dtype=f64)
    assert float(step.mean(x, e)) == pytest.approx(step.c0 * (0.7 + 0.2 * step.c1), rel=1e-14)


@pytest.mark.parametrize("t", [1, 7, 1000])
def test_step_to_zero_is_deterministic(t):
    assert CosineBetaSchedule(1000).step(t, 0).std == 0.0


@pytest.mark.parametrize("t, s, r", [(1000, 800, 300), (50, 49, 1), (600, 400, 0), (20, 5, 2)])
def test_respaced_steps_compose_and_keep_marginals(t, s, r):
    sch = CosineBetaSchedule(1000)
    ab = sch.alphas_cumprod.tolist()
    ts, sr, tr = sch.step(t, s), sch.step(s, r), sch.step(t, r)
    # The signal gain of t -> s -> r equals that of t -> r (both are the ᾱ ratio).
    assert 1 / (ts.c0 * sr.c0) ** 2 == pytest.approx(ab[t] / ab[r], rel=1e-10)
    assert 1 / tr.c0**2 == pytest.approx(ab[t] / ab[r], rel=1e-10)
    # With the true ε the step maps q(x_t | x_0) onto q(x_s | x_0): x_s = √ᾱ_s x_0 + (noise of variance 1 − ᾱ_s).
    for step, a, b in ((ts, t, s), (sr, s, r), (tr, t, r)):
        x0_coef = step.c0 * math.sqrt(ab[a])
        eps_coef = step.c0 * (math.sqrt(1 - ab[a]) - step.c1)
        assert x0_coef == pytest.approx(math.sqrt(ab[b]), rel=1e-10)
        assert eps_coef**2 + step.std**2 == pytest.approx(1 - ab[b], rel=1e-9, abs=1e-14)


def test_step_rejects_bad_times():
    sch = CosineBetaSchedule(10)
    for t, s in [(5, 5), (3, 4), (11, 2), (4, -1)]:
        with pytest.raises(ValueError, match="t_prev"):
            sch.step(t, s)
    with pytest.raises(ValueError):
        CosineBetaSchedule(0)


def test_geometric_sigma_schedule():
    sch = GeometricSigmaSchedule(1000, 0.005, 0.5)
    sig = sch.sigmas
    assert sig.shape == (1001,)
    assert sig[0] == 0.0
    assert float(sig[1]) == pytest.approx(0.005, rel=1e-14)
    assert float(sig[1000]) == pytest.approx(0.5, rel=1e-14)
    assert torch.all(sig[1:] > sig[:-1])
    ratios = sig[2:] / sig[1:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 100 ** (1 / 999)), rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        GeometricSigmaSchedule(10, 0.5, 0.005)


def test_respaced_timesteps():
    ts = respaced_timesteps(1000, 50)
    assert len(ts) == 50
    assert ts[0] == 1000 and ts[-1] == 1
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
    assert respaced_timesteps(20, None) == list(range(20, 0, -1))
    assert respaced_timesteps(20, 100) == list(range(20, 0, -1))
    five = respaced_timesteps(20, 5)
    assert len(five) == 5 and five[0] == 20 and five[-1] == 1
    assert respaced_timesteps(20, 1) == [20]
    with pytest.raises(ValueError):
        respaced_timesteps(20, 0)
