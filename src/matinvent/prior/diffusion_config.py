"""The crystal diffusion's settings (torch-free, for configs and checkpoints) and the parts of one reverse step.

:data:`COMPONENTS` names the stochastic parts of one reverse transition: ``F_corr``, the
fractional-coordinate corrector (Langevin) step; ``F``, the coordinate predictor step; ``L``, the
lattice DDPM step; ``A``, the atom-type step. RL configs weight them by these names.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPONENTS = ("F_corr", "F", "L", "A")


@dataclass
class DiffusionConfig:
    """Schedules, loss weights and sampler settings of the crystal diffusion."""

    timesteps: int = 1000
    sigma_begin: float = 0.005
    sigma_end: float = 0.5
    cost_lattice: float = 1.0
    cost_coord: float = 1.0
    cost_type: float = 20.0
    step_lr: float = 1e-5
    scale_lattice: bool = True
    max_atoms: int = 20
    clip_lattice: float | None = 20.0
    clip_types: float | None = None
    type_prediction: str = "x0"
    cost_type_ce: float = 0.0
    sample_steps: int | None = None
    type_diffusion: str = "gaussian"  # "gaussian" (DDPM on one-hots) or "masked" (absorbing state)
    absorbing_schedule: str = "linear"  # keep probability α_t of the masked type diffusion
