"""Helpers for tests that compare two models."""

from __future__ import annotations

import copy

import torch


def perturbed(model: torch.nn.Module, scale: float, seed: int = 5) -> torch.nn.Module:
    """A copy of ``model`` with seeded Gaussian noise of std ``scale`` added to every parameter."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return other
