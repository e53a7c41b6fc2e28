"""The stability alignment at toy size, importable and runnable in a subprocess (the kill -9 test).

``python align_toy.py PRIOR OUT BUDGET KILL_AT``: ``optimize --task stability`` with the settings of
``configs/align.yaml`` on a tiny prior; KILL_AT ≥ 0 SIGKILLs the process right after that iteration is scored.
"""

from __future__ import annotations

import sys

from rl_toy import kill_self_after_scoring

from matinvent.rl import RLConfig, load_rl_config, optimize
from matinvent.scoring.tasks import load_task


def align_config(prior, config_file) -> RLConfig:
    """``configs/align.yaml`` on a tiny prior: small batches, few steps, no gate (the toy prior's crystals are odd)."""
    cfg = load_rl_config(config_file)
    for key, value in dict(
        prior=str(prior), batch_size=6, sample_steps=None, validity="none", kl_steps=2, threads=1, replay_per_iter=2
    ).items():
        setattr(cfg, key, value)
    return cfg


def align(prior, out, budget, config_file, callback=None, resume=False) -> dict:
    cfg = align_config(prior, config_file)
    return optimize(
        load_task("stability"), "matinvent", budget, 0, out, cfg, progress=False, callback=callback, resume=resume
    )


if __name__ == "__main__":
    prior, out, budget, kill_at, config_file = sys.argv[1:6]
    kill = kill_self_after_scoring(int(kill_at)) if int(kill_at) >= 0 else None
    align(prior, out, int(budget), config_file, callback=kill)
