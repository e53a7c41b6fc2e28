"""Drawing crystals from a prior and writing them out (one CIF each + one extxyz)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from matinvent.crystal.constraints import ChemConstraints
from matinvent.crystal.record import Crystal, write_extxyz
from matinvent.diffusion import respaced_timesteps
from matinvent.io.sample_folder import prepare_folder, write_manifest
from matinvent.prior.model import CrystalDiffusion


def sample_crystals(
    model: CrystalDiffusion,
    n: int,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 256,
    progress: bool = True,
    constraints: ChemConstraints | None = None,
) -> list[Crystal | None]:
    """``n`` crystals, reproducible for a given (seed, steps, batch_size); ``None`` where degenerate.

    ``constraints`` are enforced inside the sampler (every crystal satisfies them); ``None`` keeps
    whatever ``model.set_constraints`` set (normally nothing).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    n_steps = len(respaced_timesteps(model.config.timesteps, steps or model.config.sample_steps))
    out: list[Crystal | None] = []
    bar = tqdm(total=n * n_steps, desc="sampling", unit="step·crystal", disable=not progress, unit_scale=True)
    with constrained(model, constraints), bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            traj = model.sample(b, generator=gen, steps=steps, progress=lambda k, b=b: bar.update(k * b))
            out.extend(traj.final.to_crystals(strict=False))
    return out


@contextmanager
def constrained(model: CrystalDiffusion, constraints: ChemConstraints | None) -> Iterator[CrystalDiffusion]:
    """``model`` under ``constraints`` inside the block (``None``: as it is); its own setting restored after."""
    before = model.constraint
    if constraints is not None:
        model.set_constraints(constraints)
    try:
        yield model
    finally:
        model.constraint = before


def write_samples(
    crystals: list[Crystal | None], directory: str | Path, meta: dict | None = None, overwrite: bool = False
) -> Path:
    """``DIR/000000.cif`` … for each buildable crystal, ``DIR/samples.extxyz`` and the manifest ``DIR/samples.json``.

    Refuses a folder that already holds CIFs or a manifest unless ``overwrite`` (which clears them).
    """
    directory = prepare_folder(directory, overwrite=overwrite)
    ok, files, failed = [], [], []
    for i, c in enumerate(crystals):
        if c is None:
            failed.append(i)
            continue
        c.write_cif(directory / f"{i:06d}.cif")
        files.append(f"{i:06d}.cif")
        ok.append(c)
    if ok:
        write_extxyz(ok, directory / "samples.extxyz")
    write_manifest(directory, files, failed, meta or {})
    return directory
