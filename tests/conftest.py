"""Shared fixtures: fixture files, tiny seeded models and a few textbook crystals."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from matinvent.prior.denoiser import DenoiserConfig
from matinvent.prior.diffusion_config import DiffusionConfig
from matinvent.prior.model import CrystalDiffusion

DATA_DIR = Path(__file__).parent / "data"

TINY_DENOISER = {"hidden": 32, "layers": 2, "n_freq": 4, "time_dim": 16}


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch():
    """Tiny models run far faster on one thread, and do not fight other processes for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from model_utils import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, data_dir) -> Path:
    """train.csv (8 rows) and val.csv (4 rows) cut from the MP-20 fixture."""
    import pandas as pd

    root = tmp_path_factory.mktemp("data")
    df = pd.read_csv(data_dir / "mp20_sample.csv")
    df.iloc[:8].to_csv(root / "train.csv", index=False)
    df.iloc[8:].to_csv(root / "val.csv", index=False)
    return root


_MODEL_CACHE: dict = {}


@pytest.fixture
def make_model():
    """Factory for a tiny seeded ``CrystalDiffusion`` (float64 by default) with a random atom-count histogram.

    Each call returns a fresh copy (built once per argument set), so tests may modify it freely.
    """

    def factory(
        timesteps: int = 20,
        seed: int = 0,
        max_atoms: int = 8,
        dtype: torch.dtype = torch.float64,
        type_diffusion: str = "gaussian",
        **denoiser_overrides,
    ) -> CrystalDiffusion:
        key = (timesteps, seed, max_atoms, dtype, type_diffusion, tuple(sorted(denoiser_overrides.items())))
        if key not in _MODEL_CACHE:
            torch.manual_seed(seed)
            model = CrystalDiffusion(
                DenoiserConfig(**{**TINY_DENOISER, **denoiser_overrides}),
                DiffusionConfig(timesteps=timesteps, max_atoms=max_atoms, type_diffusion=type_diffusion),
            )
            if dtype != torch.float32:  # float32 is the default; .to(float32) would also downcast the buffers
                model = model.to(dtype)
            gen = torch.Generator().manual_seed(seed + 1)
            counts = torch.rand(max_atoms + 1, generator=gen, dtype=torch.float64)
            counts[:2] = 0.0  # at least 2 atoms per crystal
            model.set_natoms_histogram(counts)
            _MODEL_CACHE[key] = model.eval()
        return copy.deepcopy(_MODEL_CACHE[key])

    return factory


@pytest.fixture(scope="session")
def si_diamond():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0.0, 0.0, 0.0]])


@pytest.fixture(scope="session")
def nacl_rocksalt():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="session")
def srtio3_perovskite():
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O", "O", "O"],
        [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]],
    )


@pytest.fixture(scope="session")
def structures(si_diamond, nacl_rocksalt, srtio3_perovskite):
    return [si_diamond, nacl_rocksalt, srtio3_perovskite]
