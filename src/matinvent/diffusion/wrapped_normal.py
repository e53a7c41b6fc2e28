"""Wrapped normal distribution on the unit torus [0, 1)^d.

N_W(x | μ, σ²) = Σ_k N(x + k | μ, σ²), k ∈ Z. Sums are truncated to |k| ≤ ``n_images``,
which is exact to double precision for σ ≤ 0.5 with the default of 3 images.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

_LOG_2PI = math.log(2.0 * math.pi)


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
