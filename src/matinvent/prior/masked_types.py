"""Masked (absorbing-state) diffusion of the atom types, as MatterGen does (D3PM absorbing).

State: A (N, K+1) one-hot over the K elements plus the mask (column K). Forward: each atom's type
is masked with probability 1 − α_t (``diffusion.absorbing_schedule``); at t = T every atom is
masked. The denoiser's type head gives logits of the clean element for every atom; atoms that are
already decided are copied (carry-over), so only masked atoms are sampled, each decided at most
once and never changed afterwards. Per-step log-probs and KLs are exact categorical quantities
(:mod:`matinvent.diffusion.absorbing`). Loss: the cross-entropy of the clean element at the
masked atoms (MaskGIT / MatterGen's auxiliary loss, unweighted over t).
"""

from __future__ import annotations

import torch
from torch.nn import functional as Fn

from matinvent.crystal.batch import scatter_sum
from matinvent.diffusion.absorbing import AbsorbingSchedule, gumbel_noise


def is_masked(A: torch.Tensor, n_types: int) -> torch.Tensor:
    """(N,) bool: atoms whose state is the mask (column ``n_types``)."""
    return A[:, n_types] > 0.5


def all_masked(N: int, n_types: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The fully masked state at t = T, (N, K+1)."""
    A = torch.zeros(N, n_types + 1, dtype=dtype, device=device)
    A[:, n_types] = 1.0
    return A


def mask_types(
    Z: torch.Tensor,
    t_atom: torch.Tensor,
    schedule: AbsorbingSchedule,
    n_types: int,
    generator: torch.Generator | None,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward noising of clean types Z (N,) (1-based) at per-atom times: (A_t (N, K+1), masked (N,))."""
    u = torch.rand(len(Z), generator=generator, dtype=torch.float64).to(Z.device)
    masked = u < schedule.mask_prob(t_atom).to(Z.device)
    idx = torch.where(masked, torch.full_like(Z, n_types), Z - 1)
    return Fn.one_hot(idx, n_types + 1).to(dtype), masked


def x0_log_probs(type_out: torch.Tensor, A: torch.Tensor, n_types: int) -> torch.Tensor:
    """(N, K) log p̂(x_0): the network's logits for masked atoms, the known element for decided ones."""
    logp = torch.log_softmax(type_out, dim=-1)
    known = torch.log(A[:, :n_types].clamp_min(1e-30))  # 0 at the decided element, ≈ −69 elsewhere
    return torch.where(is_masked(A, n_types).unsqueeze(-1), logp, known.to(logp.dtype))


def type_loss(
    log_p0: torch.Tensor,
    Z: torch.Tensor,
    masked: torch.Tensor,
    batch: torch.Tensor,
    num_atoms: torch.Tensor,
    per_crystal: bool,
) -> torch.Tensor:
    """Cross-entropy of the clean element at masked atoms: mean over masked atoms, or per crystal
    (sum over its masked atoms / its number of atoms)."""
    ce = Fn.nll_loss(log_p0, Z - 1, reduction="none") * masked.to(log_p0.dtype)
    if per_crystal:
        return scatter_sum(ce, batch, len(num_atoms)) / num_atoms.to(ce.dtype)
    return ce.sum() / masked.sum().clamp_min(1)


def sample_step(
    A: torch.Tensor, log_p0: torch.Tensor, unmask: float, n_types: int, generator: torch.Generator | None
) -> torch.Tensor:
    """A_{t_prev} from A_t: each masked atom is decided with probability ``unmask``, its element
    drawn from p̂(x_0) (Gumbel-max); decided atoms are copied."""
    N = A.shape[0]
    decide = torch.rand(N, generator=generator, dtype=torch.float64).to(A.device) < unmask
    g = gumbel_noise((N, n_types), generator, log_p0.dtype).to(A.device)
    drawn = (log_p0 + g).argmax(-1)
    masked = is_masked(A, n_types)
    idx = torch.where(masked & decide, drawn, A.argmax(-1))
    return Fn.one_hot(idx, n_types + 1).to(A.dtype)
