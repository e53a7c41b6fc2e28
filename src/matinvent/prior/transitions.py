"""Tensors that flow through :class:`~matinvent.prior.model.CrystalDiffusion`.

:class:`Transition` (one sampled reverse step of a batch) with its :class:`TransitionParams`
(the means/stds — or, for masked types, the categoricals — that produced it), a batch's
:class:`Trajectory`, and the :class:`NoisedBatch` of training inputs and targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from matinvent.crystal.batch import CrystalBatch


@dataclass
class Transition:
    """One sampled reverse step t → t_prev for a batch, with its transition parameters.

    State at t: A (N, K), F (N, 3), L (B, 3, 3) (diffusion frame). Action: F_mid, then
    (A_next, F_next, L_next). ``params`` holds the means and standard deviations used.
    """

    t: int
    t_prev: int
    A: torch.Tensor
    F: torch.Tensor
    L: torch.Tensor
    F_mid: torch.Tensor
    A_next: torch.Tensor
    F_next: torch.Tensor
    L_next: torch.Tensor
    params: TransitionParams | None = None  # the sampler's; None for transitions rebuilt from storage


@dataclass
class TransitionParams:
    """Means/stds of the corrector (F) and predictor (F, L, A) sub-steps; stds are scalars."""

    mean_F_corr: torch.Tensor
    std_F_corr: float
    mean_F: torch.Tensor
    std_F: float
    mean_L: torch.Tensor
    std_L: float
    mean_A: torch.Tensor | None = None  # Gaussian types
    std_A: float = 0.0
    logp_A: torch.Tensor | None = None  # masked types: (N, K) log p̂(x_0), the mask state at t, u
    masked_A: torch.Tensor | None = None
    unmask_A: float = 0.0
    allowed_A: torch.Tensor | None = None  # constrained masked types: (N, K) bool elements each atom may take


@dataclass
class NoisedBatch:
    """Forward-noised training inputs at times t (B,) and their regression targets."""

    t: torch.Tensor
    A_t: torch.Tensor
    F_t: torch.Tensor
    L_t: torch.Tensor
    eps_L: torch.Tensor
    eps_A: torch.Tensor | None  # Gaussian types only
    target_F: torch.Tensor
    Z: torch.Tensor
    batch: torch.Tensor
    num_atoms: torch.Tensor
    type_masked: torch.Tensor | None = None  # masked type diffusion: (N,) atoms masked at t


@dataclass
class Trajectory:
    """A batch of sampled crystals with every reverse step that produced them."""

    num_atoms: torch.Tensor
    batch: torch.Tensor
    transitions: list[Transition] = field(default_factory=list)
    final: CrystalBatch | None = None
