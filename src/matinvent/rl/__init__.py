"""RL fine-tuning of the crystal diffusion prior: one loop, sibling methods, resumable runs."""

from matinvent.rl.config import METHODS, RLConfig, load_rl_config
from matinvent.rl.loop import optimize

__all__ = ["METHODS", "RLConfig", "load_rl_config", "optimize"]
