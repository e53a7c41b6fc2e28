"""RL fine-tuning of the crystal diffusion prior: one trainer, sibling methods, resumable runs.

The names load lazily, so ``matinvent.rl.config`` (validating a config) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "METHODS": "matinvent.rl.config",
    "RLConfig": "matinvent.rl.config",
    "load_rl_config": "matinvent.rl.config",
    "optimize": "matinvent.rl.loop",
    "RLTrainer": "matinvent.rl.trainer",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'matinvent.rl' has no attribute {name!r}")
