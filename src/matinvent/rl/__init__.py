"""RL fine-tuning of the crystal diffusion prior: one trainer, sibling methods, resumable runs."""

from matinvent.rl.config import METHODS, RLConfig, load_rl_config
from matinvent.rl.loop import optimize
from matinvent.rl.trainer import RLTrainer

__all__ = ["METHODS", "RLConfig", "RLTrainer", "load_rl_config", "optimize"]
