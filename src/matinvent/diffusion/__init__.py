"""Generic diffusion math: noise schedules, Gaussian and wrapped-normal densities.

Nothing in this subpackage knows about crystals; crystal code imports it, never the reverse.
"""

from matinvent.diffusion.absorbing import AbsorbingSchedule, absorbing_kl, absorbing_log_prob, gumbel_noise
from matinvent.diffusion.gaussian import gaussian_kl_same_std, gaussian_log_prob
from matinvent.diffusion.schedules import CosineBetaSchedule, DDPMStep, GeometricSigmaSchedule, respaced_timesteps
from matinvent.diffusion.wrapped_normal import (
    wrap,
    wrap_centered,
    wrapped_normal_kl_same_std,
    wrapped_normal_log_prob,
    wrapped_normal_score,
    wrapped_normal_score_norm,
)

__all__ = [
    "AbsorbingSchedule",
    "absorbing_kl",
    "absorbing_log_prob",
    "gumbel_noise",
    "CosineBetaSchedule",
    "DDPMStep",
    "GeometricSigmaSchedule",
    "gaussian_kl_same_std",
    "gaussian_log_prob",
    "respaced_timesteps",
    "wrap",
    "wrap_centered",
    "wrapped_normal_kl_same_std",
    "wrapped_normal_log_prob",
    "wrapped_normal_score",
    "wrapped_normal_score_norm",
]
