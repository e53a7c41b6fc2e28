"""Element-wise Gaussian log-densities and KL divergences."""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """Element-wise log N(x | mean, std²); ``std`` broadcasts and must be > 0."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    z = (x - mean) / std
    return -0.5 * z * z - torch.log(std) - 0.5 * _LOG_2PI


def gaussian_kl_same_std(mean_p: torch.Tensor, mean_q: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """Element-wise KL(N(mean_p, std²) ‖ N(mean_q, std²)) = (mean_p − mean_q)² / (2 std²)."""
    std = torch.as_tensor(std, dtype=mean_p.dtype, device=mean_p.device)
    d = mean_p - mean_q
    return 0.5 * d * d / (std * std)
