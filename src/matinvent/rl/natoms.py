"""The atom count N as the MDP's first action: a learnable categorical over 0..max_atoms.

Its logits start at log of the prior's histogram; counts the prior never produced, and counts a
chemical-space constraint forbids (``allowed``), stay impossible (masked). Both the agent and the
prior are renormalised over that support S, so KL(agent ‖ prior) is exact and finite:

    KL = Σ_{n ∈ S} p_n (log p_n − log q_n),   q_n = q̃_n / Σ_{m ∈ S} q̃_m.
"""

from __future__ import annotations

import torch
from torch import nn


class NatomsPolicy(nn.Module):
    """Categorical over 0..max_atoms on the support of ``prior_prob`` (index = N), within ``allowed`` (bool)."""

    def __init__(self, prior_prob: torch.Tensor, allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        q = prior_prob.detach().to(torch.float64)
        support = q > 0
        if allowed is not None:
            support &= allowed.to(support.device)
        if not support.any():
            raise ValueError(
                f"the prior's atom-count histogram is empty{'' if allowed is None else ' on the allowed counts'}"
            )
        q = torch.where(support, q, torch.zeros_like(q))
        q = q / q.sum()
        log_q = torch.where(support, q.log(), torch.full_like(q, -torch.inf))
        self.register_buffer("support", support)
        self.register_buffer("prior_logp", log_q.float())
        self.logits = nn.Parameter(torch.where(support, log_q, torch.zeros_like(q)).float())

    def log_probs(self) -> torch.Tensor:
        """(K,) log p_n of every count (−inf off the prior's support)."""
        return torch.log_softmax(self.logits.masked_fill(~self.support, -torch.inf), dim=-1)

    def probs(self) -> torch.Tensor:
        return self.log_probs().exp()

    def log_prob(self, n: torch.Tensor) -> torch.Tensor:
        """(B,) log p(N = n) of drawn counts (differentiable)."""
        return self.log_probs()[n.long()]

    def kl(self) -> torch.Tensor:
        """KL(agent ‖ prior) over the support (a scalar, differentiable)."""
        lp = self.log_probs()[self.support]
        return (lp.exp() * (lp - self.prior_logp[self.support])).sum()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.multinomial(self.probs().cpu(), n, replacement=True, generator=generator)
