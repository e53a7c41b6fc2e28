"""Wrapped normal distribution on the unit torus [0, 1)^d.

N_W(x | μ, σ²) = Σ_k N(x + k | μ, σ²), k ∈ Z. Sums are truncated to |k| ≤ ``n_images``,
which is exact to double precision for σ ≤ 0.5 with the default of 3 images.
:func:`wrapped_normal_kl_same_std` is the exact KL between two of them with the same σ.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

_LOG_2PI = math.log(2.0 * math.pi)
_KL_FOURIER_MIN_STD = 0.05  # the KL's Fourier series is used from here up, the nearest-image form below
_KL_FOURIER_TERMS = 32  # series tail < 1e-20 relative for σ ≥ 0.05
_KL_LAGUERRE_NODES = 8  # the quadrature term is < 2e-3 of the KL and exact to ~2e-8 of itself


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Fractional part: maps any real to [0, 1)."""
    y = x - torch.floor(x)
    return torch.where(y >= 1.0, y - 1.0, y)


def wrap_centered(d: torch.Tensor) -> torch.Tensor:
    """Maps a displacement to its periodic image in [−½, ½)."""
    return d - torch.floor(d + 0.5)


def _image_offsets(x: torch.Tensor, n_images: int) -> torch.Tensor:
    return torch.arange(-n_images, n_images + 1, dtype=x.dtype, device=x.device)


def wrapped_normal_log_prob(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float, n_images: int = 3
) -> torch.Tensor:
    """Element-wise log N_W(x | mean, std²) on [0, 1); ``std`` broadcasts and must be > 0."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    d = wrap_centered(x - mean).unsqueeze(-1) + _image_offsets(x, n_images)
    s = std.unsqueeze(-1) if std.dim() > 0 else std
    logs = -0.5 * (d / s) ** 2 - torch.log(s) - 0.5 * _LOG_2PI
    return torch.logsumexp(logs, dim=-1)


def wrapped_normal_score(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float, n_images: int = 3
) -> torch.Tensor:
    """Element-wise ∂/∂x log N_W(x | mean, std²)."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    d = wrap_centered(x - mean).unsqueeze(-1) + _image_offsets(x, n_images)
    s = std.unsqueeze(-1) if std.dim() > 0 else std
    w = torch.softmax(-0.5 * (d / s) ** 2, dim=-1)
    return -(w * d).sum(-1) / (s.squeeze(-1) if std.dim() > 0 else s) ** 2


def wrapped_normal_score_norm(
    sigmas: torch.Tensor, n_samples: int = 20000, seed: int = 0, n_images: int = 3
) -> torch.Tensor:
    """Monte-Carlo estimate of E_x[ score(x)² ] per coordinate for x ~ N_W(0, σ²), one per σ.

    Used as the λ_t⁻¹ normalisation of wrapped-normal score matching (DiffCSP). Deterministic, so
    computed once per process for a given schedule (building a model costs seconds otherwise).
    """
    key = tuple(sigmas.detach().to(torch.float64).cpu().tolist())
    return _score_norm(key, n_samples, seed, n_images).clone()


@lru_cache(maxsize=8)
def _score_norm(sigmas: tuple[float, ...], n_samples: int, seed: int, n_images: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n_samples, generator=gen, dtype=torch.float64)
    out = torch.empty(len(sigmas), dtype=torch.float64)
    for i, s in enumerate(torch.tensor(sigmas, dtype=torch.float64)):
        x = wrap(s * eps)
        out[i] = (wrapped_normal_score(x, torch.zeros_like(x), s, n_images) ** 2).mean()
    return out


def wrapped_normal_kl_same_std(mean_p: torch.Tensor, mean_q: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """Element-wise KL(N_W(mean_p, std²) ‖ N_W(mean_q, std²)) on [0, 1); ``std`` broadcasts and must be > 0.

    Exact for every σ (≈1e-11 relative in float64, 1e-6 in float32), differentiable in both means; a function of
    δ = mean_p − mean_q only, even and 1-periodic in δ, ≥ 0 and exactly 0 at δ = 0. With
    ρ = exp(−2π²σ²) and u = |δ| wrapped into [0, ½]:

    * σ ≥ 0.05, Fourier series (log N_W from the Jacobi triple product), 32 terms:
      KL = Σ_{k≥1} 4 (−1)^{k+1} ρ^{k²+k} / (k (1 − ρ^{2k})) · sin²(π k δ);
    * σ < 0.05, the images ±1 of both densities (further ones change it by ~exp(−1/σ²)): with
      G(a) = E_z softplus(a + z/σ), z ~ N(0, 1), and a_± = −(1 ∓ 2u)/(2σ²),
      KL = u²/(2σ²) − [G(a_+) + G(a_−) − 2 G(−1/(2σ²))].

    For small σ this is the Gaussian KL u²/(2σ²) of the wrapped difference unless u is within a
    few σ of ½; for wide σ the Gaussian value overstates it (≈170× at σ = 0.447, small δ).
    """
    delta = wrap_centered(mean_p - mean_q)
    std = torch.as_tensor(std, dtype=delta.dtype, device=delta.device)
    if std.numel() == 1:
        small = float(std) < _KL_FOURIER_MIN_STD
        return _kl_nearest_images(delta, std) if small else _kl_fourier(delta, std)
    fourier, nearest = _kl_fourier(delta, std), _kl_nearest_images(delta, std)
    return torch.where(std >= _KL_FOURIER_MIN_STD, fourier, nearest)


def _kl_fourier(delta: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    k = torch.arange(1, _KL_FOURIER_TERMS + 1, dtype=delta.dtype, device=delta.device)
    c = 2.0 * math.pi**2 * std.unsqueeze(-1) ** 2
    sign = 1.0 - 2.0 * (k % 2 == 0).to(delta.dtype)
    coef = 4.0 * sign * torch.exp(-c * (k * k + k)) / (-k * torch.expm1(-2.0 * c * k))
    return (coef * torch.sin(math.pi * k * delta.unsqueeze(-1)) ** 2).sum(-1)


def _kl_nearest_images(delta: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    u = delta.abs()
    var2 = 2.0 * std * std
    g = _expected_softplus
    images = g(-(1.0 - 2.0 * u) / var2, std) + g(-(1.0 + 2.0 * u) / var2, std) - 2.0 * g(-1.0 / var2, std)
    return u * u / var2 - images


def _expected_softplus(a: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E softplus(y), y = a + z/σ, z ~ N(0, 1), as E max(y, 0) (closed form) + E log1p(e^{−|y|}) (Gauss–Laguerre)."""
    b = 1.0 / std
    c = a * std  # a / b
    relu = b * (c * torch.special.ndtr(c) + _std_normal_pdf(c))
    y, w = _laguerre_log1p_exp(a.dtype, a.device)
    sy, c = std.unsqueeze(-1) * y, c.unsqueeze(-1)  # φ(sy − c) + φ(sy + c) = 2 cosh(sy·c) e^{−(sy² + c²)/2}/√(2π)
    pair = torch.exp(-0.5 * (sy * sy + c * c) - 0.5 * _LOG_2PI) * torch.cosh(sy * c)
    return relu + 2.0 * std * (w * pair).sum(-1)


def _std_normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x - 0.5 * _LOG_2PI)


@lru_cache(maxsize=8)
def _laguerre_log1p_exp(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes y_i and weights w_i with Σ w_i f(y_i) ≈ ∫_0^∞ f(y) log1p(e^{−y}) dy for smooth f."""
    y, w = np.polynomial.laguerre.laggauss(_KL_LAGUERRE_NODES)
    w = w * np.exp(y) * np.log1p(np.exp(-y))
    return torch.as_tensor(y, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)
