"""Absorbing-state ("masked") discrete diffusion of categorical variables (D3PM absorbing, MDLM).

Each of the K categories has an extra absorbing state, the mask (index K). Forward: a clean
token is kept with probability α_t and replaced by the mask otherwise, independently per
token; α_0 = 1, α_T = 0, decreasing. Reverse step t → t_prev (< t) for a token masked at t:

    p(x_{t_prev} = k)    = u · p̂(x_0 = k)      k < K,    u = (α_{t_prev} − α_t) / (1 − α_t)
    p(x_{t_prev} = mask) = 1 − u

with p̂ the model's distribution of the clean token; a token that is not masked stays what it
is (probability 1). The step to t_prev = 0 has u = 1, so every token is decided by then. Per-step
log-probabilities and KLs between two models are therefore exact categorical quantities:
``absorbing_log_prob`` and ``absorbing_kl``.
"""

from __future__ import annotations

import math

import torch


class AbsorbingSchedule:
    """Keep probabilities α_t on t ∈ {0, …, T}: ``linear`` α_t = 1 − t/T or ``cosine`` α_t = cos(π t / 2T)."""

    def __init__(self, T: int, kind: str = "linear") -> None:
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        t = torch.arange(T + 1, dtype=torch.float64) / T
        if kind == "linear":
            alpha = 1.0 - t
        elif kind == "cosine":
            alpha = torch.cos(0.5 * math.pi * t)
        else:
            raise ValueError(f"unknown absorbing schedule {kind!r} (linear or cosine)")
        alpha[0], alpha[-1] = 1.0, 0.0
        self.T = T
        self.kind = kind
        self.alphas = alpha

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        """1 − α_t for integer times ``t`` (any shape)."""
        return 1.0 - self.alphas.to(t.device)[t]

    def unmask_prob(self, t: int, t_prev: int) -> float:
        """u = P(a token masked at t is decided at t_prev) = (α_{t_prev} − α_t) / (1 − α_t)."""
        if not 0 <= t_prev < t <= self.T:
            raise ValueError(f"need 0 <= t_prev < t <= T, got t={t}, t_prev={t_prev}")
        a_t, a_prev = float(self.alphas[t]), float(self.alphas[t_prev])
        return 1.0 if t_prev == 0 else (a_prev - a_t) / (1.0 - a_t)


def absorbing_log_prob(x_next: torch.Tensor, log_p0: torch.Tensor, masked: torch.Tensor, unmask: float) -> torch.Tensor:
    """Element-wise log p(x_next | x_t) of one reverse step.

    x_next: (N,) category indices in 0..K (K = mask); log_p0: (N, K) normalised log p̂(x_0);
    masked: (N,) bool, tokens masked at t. Tokens not masked at t contribute 0 (they are copied).
    """
    K = log_p0.shape[-1]
    is_mask = x_next == K
    picked = log_p0.gather(-1, x_next.clamp(max=K - 1).unsqueeze(-1)).squeeze(-1)
    stay = math.log1p(-unmask) if unmask < 1.0 else -math.inf
    lp = torch.where(is_mask, torch.full_like(picked, stay), picked + math.log(max(unmask, 1e-300)))
    return torch.where(masked, lp, torch.zeros_like(lp))


def absorbing_kl(log_p0: torch.Tensor, log_q0: torch.Tensor, masked: torch.Tensor, unmask: float) -> torch.Tensor:
    """Element-wise KL(p(·|x_t) ‖ q(·|x_t)) of one reverse step, (N,).

    Both models stay masked with the same probability 1 − u, so only the decided part differs:
    KL = u · Σ_k p̂_k (log p̂_k − log q̂_k) for masked tokens, 0 for the others.
    """
    kl = (log_p0.exp() * (log_p0 - log_q0)).sum(-1)
    return torch.where(masked, unmask * kl, torch.zeros_like(kl))


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    """Standard Gumbel noise: argmax(logits + g) is an exact categorical sample."""
    u = torch.rand(*shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return (-torch.log(-torch.log(u))).to(dtype)
