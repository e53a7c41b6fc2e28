"""Noise schedules: cosine-β DDPM (Nichol & Dhariwal 2021) and geometric σ for score matching.

All tables are indexed by the integer time t ∈ {0, …, T}; t = 0 is clean data. A reverse
step always goes from a time t to an earlier time t_prev < t, so the same objects serve the
full T-step sampler and respaced samplers with fewer steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DDPMStep:
    """Coefficients of one ancestral step x_t → x_{t_prev}.

    mean = c0 · (x_t − c1 · ε̂) = coef_x0 · x̂0 + coef_xt · x_t with x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t;
    std = posterior standard deviation (0 when t_prev = 0).
    """

    c0: float
    c1: float
    std: float
    sqrt_alpha_bar: float
    sqrt_one_minus_alpha_bar: float
    coef_x0: float
    coef_xt: float

    def mean(self, x_t: torch.Tensor, eps_hat: torch.Tensor, clip: float | None = None) -> torch.Tensor:
        """Posterior mean; with ``clip`` the implied x̂0 is clamped to [−clip, clip] first.

        Clipping bounds the error amplification of steps with tiny ᾱ_t (c0 ≈ 300 for the
        first step of a 100-step respaced cosine sampler).
        """
        if clip is None:
            return self.c0 * (x_t - self.c1 * eps_hat)
        x0 = ((x_t - self.sqrt_one_minus_alpha_bar * eps_hat) / self.sqrt_alpha_bar).clamp(-clip, clip)
        return self.coef_x0 * x0 + self.coef_xt * x_t


class CosineBetaSchedule:
    """DDPM with the cosine schedule ᾱ_t = f(t)/f(0), f(t) = cos²(((t/T)+s)/(1+s)·π/2)."""

    def __init__(self, T: int, s: float = 0.008, max_beta: float = 0.999) -> None:
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = T
        t = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-8, max=max_beta)
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε; ``t`` broadcasts against ``x0`` (already expanded)."""
        ab = self.alphas_cumprod.to(x0.device, x0.dtype)[t]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def step(self, t: int, t_prev: int) -> DDPMStep:
        """Ancestral step between arbitrary times t > t_prev ≥ 0 (respacing-aware)."""
        if not 0 <= t_prev < t <= self.T:
            raise ValueError(f"need 0 <= t_prev < t <= T, got t={t}, t_prev={t_prev}")
        ab_t = float(self.alphas_cumprod[t])
        ab_prev = float(self.alphas_cumprod[t_prev])
        alpha = ab_t / ab_prev
        beta = 1.0 - alpha
        var = beta * (1.0 - ab_prev) / (1.0 - ab_t)
        return DDPMStep(
            c0=1.0 / math.sqrt(alpha),
            c1=beta / math.sqrt(1.0 - ab_t),
            std=math.sqrt(max(var, 0.0)),
            sqrt_alpha_bar=math.sqrt(ab_t),
            sqrt_one_minus_alpha_bar=math.sqrt(1.0 - ab_t),
            coef_x0=math.sqrt(ab_prev) * beta / (1.0 - ab_t),
            coef_xt=math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab_t),
        )


class GeometricSigmaSchedule:
    """σ_0 = 0, σ_t = σ_1 (σ_T/σ_1)^((t−1)/(T−1)) for t ≥ 1 (DiffCSP: σ_1 = 0.005, σ_T = 0.5)."""

    def __init__(self, T: int, sigma_begin: float = 0.005, sigma_end: float = 0.5) -> None:
        if not 0 < sigma_begin < sigma_end:
            raise ValueError(f"need 0 < sigma_begin < sigma_end, got {sigma_begin}, {sigma_end}")
        self.T = T
        self.sigma_begin = sigma_begin
        self.sigma_end = sigma_end
        expo = torch.arange(T, dtype=torch.float64) / max(T - 1, 1)
        sig = sigma_begin * (sigma_end / sigma_begin) ** expo
        self.sigmas = torch.cat([torch.zeros(1, dtype=torch.float64), sig])


def respaced_timesteps(T: int, steps: int | None) -> list[int]:
    """Decreasing times visited by a sampler with ``steps`` steps (all T when None), ending at 1."""
    if steps is None or steps >= T:
        return list(range(T, 0, -1))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ts = torch.linspace(T, 1, steps, dtype=torch.float64).round().long().tolist()
    return sorted(set(ts), reverse=True)
