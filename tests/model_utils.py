"""Helpers for tests that compare two models."""

from __future__ import annotations

import copy
from pathlib import Path

import torch


def perturbed(model: torch.nn.Module, scale: float, seed: int = 5) -> torch.nn.Module:
    """A copy of ``model`` with seeded Gaussian noise of std ``scale`` added to every parameter."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return other


def save_tiny_checkpoint(path: Path, natoms: range = range(2, 6)) -> Path:
    """A seeded 1-layer prior (T = 10) sampling ``natoms`` atoms uniformly, saved as a checkpoint folder."""
    from matinvent.prior.checkpoint import save_prior
    from matinvent.prior.denoiser import DenoiserConfig
    from matinvent.prior.diffusion_config import DiffusionConfig
    from matinvent.prior.model import CrystalDiffusion

    torch.manual_seed(0)
    model = CrystalDiffusion(DenoiserConfig(hidden=16, layers=1, n_freq=2, time_dim=8), DiffusionConfig(timesteps=10))
    hist = torch.zeros(21)
    hist[natoms.start : natoms.stop] = 1.0
    model.set_natoms_histogram(hist)
    return save_prior(model, path)


def save_tiny_masked_prior(path: Path, max_atoms: int = 5, sample_steps: int = 6) -> Path:
    """A seeded 1-layer masked-type prior (T = 20) with N uniform over 2..``max_atoms``, saved to ``path``."""
    from matinvent.prior.checkpoint import save_prior
    from matinvent.prior.denoiser import DenoiserConfig
    from matinvent.prior.diffusion_config import DiffusionConfig
    from matinvent.prior.model import CrystalDiffusion

    torch.manual_seed(0)
    model = CrystalDiffusion(
        DenoiserConfig(hidden=16, layers=1, n_freq=4, time_dim=16),
        DiffusionConfig(
            timesteps=20, max_atoms=max_atoms, sample_steps=sample_steps, type_diffusion="masked", cost_type=1.0
        ),
    )
    counts = torch.ones(max_atoms + 1, dtype=torch.float64)
    counts[:2] = 0.0
    model.set_natoms_histogram(counts)
    return save_prior(model, path)
