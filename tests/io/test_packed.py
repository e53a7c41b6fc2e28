"""The packed training set gives exactly the batches of ``CrystalBatch.from_crystals``; the
sync-free ``scatter_mean`` gives exactly the ``bincount`` form it replaced."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from matinvent.crystal.batch import CrystalBatch, scatter_mean, scatter_sum
from matinvent.crystal.record import Crystal
from matinvent.io.packed import PackedCrystals

FIELDS = ("Z", "F", "L", "batch", "num_atoms")


@pytest.fixture(scope="module")
def crystals(data_dir) -> list[Crystal]:
    return [Crystal.from_cif(c) for c in pd.read_csv(data_dir / "mp20_sample.csv")["cif"]]


def assert_same_batch(a: CrystalBatch, b: CrystalBatch) -> None:
    for k in FIELDS:
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.device == y.device, k
        assert torch.equal(x, y), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gather_equals_from_crystals_in_any_order_with_repeats(crystals, dtype):
    packed = PackedCrystals.from_crystals(crystals, dtype=dtype)
    assert len(packed) == len(crystals)
    for idx in ([3], [0, 1, 2], [11, 0, 5, 5, 7], list(range(len(crystals)))[::-1]):
        got = packed.gather(torch.tensor(idx))
        assert_same_batch(got, CrystalBatch.from_crystals([crystals[i] for i in idx], dtype=dtype))


def test_gather_with_a_host_copy_of_the_indices_and_slices(crystals):
    packed = PackedCrystals.from_crystals(crystals).to("cpu")
    idx = torch.randperm(len(crystals), generator=torch.Generator().manual_seed(0))[:6]
    assert_same_batch(packed.gather(idx, idx_host=idx.clone()), CrystalBatch.from_crystals([crystals[i] for i in idx]))
    assert_same_batch(packed.slice(8, 100), CrystalBatch.from_crystals(crystals[8:]))


def test_empty_set_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        PackedCrystals.from_crystals([])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gather_on_cuda_equals_from_crystals(crystals):
    packed = PackedCrystals.from_crystals(crystals).to("cuda")
    idx = torch.tensor([4, 1, 9, 1])
    got = packed.gather(idx.cuda(), idx_host=idx)
    assert_same_batch(got, CrystalBatch.from_crystals([crystals[i] for i in idx]).to("cuda"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_scatter_mean_equals_the_bincount_form_bit_for_bit(dtype):
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, 7, (300,), generator=gen)
    src = torch.randn(300, 5, generator=gen).to(dtype)
    count = torch.bincount(index, minlength=9).clamp(min=1).to(dtype)  # groups 7 and 8 are empty
    assert torch.equal(scatter_mean(src, index, 9), scatter_sum(src, index, 9) / count.view(-1, 1))
