"""A toy oracle/task and a runner used by the RL tests, importable from a subprocess (kill -9 test)."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from matinvent.oracles import Oracle
from matinvent.scoring.tasks import task_from_dict

TASK = task_from_dict({"name": "light", "properties": {"light": {"target": "above", "threshold": 0.75, "ramp": 0.75}}})


class LightFraction(Oracle):
    """Toy property: the fraction of atoms with Z ≤ 50 (counts its calls)."""

    name, unit = "light", ""

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, structures):
        self.calls += len(structures)
        return [np.mean([site.specie.Z <= 50 for site in s]) for s in structures]


def save_tiny_prior(directory):
    """A 1-layer, 16-wide prior (T = 20, 6 sampler steps, N uniform over 2..5) saved to ``directory``."""
    import torch

    from matinvent.prior.checkpoint import save_prior
    from matinvent.prior.denoiser import DenoiserConfig
    from matinvent.prior.diffusion_config import DiffusionConfig
    from matinvent.prior.model import CrystalDiffusion

    torch.manual_seed(0)
    model = CrystalDiffusion(
        DenoiserConfig(hidden=16, layers=1, n_freq=4, time_dim=16),
        DiffusionConfig(timesteps=20, max_atoms=5, sample_steps=6),
    )
    counts = torch.ones(6, dtype=torch.float64)
    counts[:2] = 0.0
    model.set_natoms_histogram(counts)
    return save_prior(model, directory)


def kill_self_after_scoring(iteration: int):
    """A callback that SIGKILLs this process right after iteration ``iteration`` is committed to memory."""

    def callback(event: str, it: int) -> None:
        if event == "scored" and it == iteration:
            os.kill(os.getpid(), signal.SIGKILL)

    return callback


if __name__ == "__main__":  # python rl_toy.py PRIOR OUT BUDGET KILL_AT
    from matinvent.rl import RLConfig, optimize
    from matinvent.scoring.scorer import Scorer

    prior, out, budget, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cfg = RLConfig(
        prior=prior, batch_size=6, sample_steps=None, validity="none", lr=1e-3, kl_steps=2, threads=1, replay_per_iter=2
    )
    scorer = Scorer(TASK, oracles={"light": LightFraction()})
    optimize(
        TASK, "matinvent", budget, 0, out, cfg, scorer=scorer, progress=False, callback=kill_self_after_scoring(kill_at)
    )
