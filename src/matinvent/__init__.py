"""matinvent: goal-directed crystal design by RL fine-tuning of a crystal diffusion prior.

``import matinvent as mi`` is light (no torch): the API functions of :mod:`matinvent.api` are
imported on first use.

    prior = mi.load_prior("mp20_masked")
    table = mi.score(prior.sample(8, seed=0), "density")
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("matinvent")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_API = ("Prior", "RunResult", "load_prior", "load_task", "optimize", "score", "tasks")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module("matinvent.api"), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'matinvent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
