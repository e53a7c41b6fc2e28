"""CDVAE/DiffCSP CSV reading, the npz cache, and variable-size batches."""

from __future__ import annotations

import gzip
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from matinvent.crystal.batch import CrystalBatch, batch_index, fully_connected_edges, scatter_mean, scatter_sum
from matinvent.crystal.record import Crystal, CrystalError
from matinvent.io.cdvae_csv import load_arrays, read_cdvae_csv, save_arrays


def _assert_same_crystals(a: list[Crystal], b: list[Crystal], atol: float = 0.0) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.Z, y.Z)
        np.testing.assert_allclose(x.F, y.F, rtol=0, atol=atol)
        np.testing.assert_allclose(x.L, y.L, rtol=0, atol=atol)


# --- read_cdvae_csv ---------------------------------------------------------------------------
def test_mp20_sample_without_index_column(data_dir):
    path = data_dir / "mp20_sample.csv"
    raw = pd.read_csv(path)
    assert not any(str(c).startswith("Unnamed") for c in raw.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = read_cdvae_csv(path)
    assert len(table) == len(raw) == 12
    assert table.n_skipped == 0
    assert table.ids == raw["material_id"].tolist()
    for crystal, cif in zip(table.crystals, raw["cif"], strict=True):
        assert crystal.allclose(Crystal.from_cif(cif), atol=0.0)
    assert "cif" not in table.properties.columns
    assert table.properties["pretty_formula"].tolist() == raw["pretty_formula"].tolist()
    assert [c.formula for c in table.crystals] == [
        Crystal.from_cif(cif).to_structure().composition.reduced_formula for cif in raw["cif"]
    ]


def test_perov_sample_with_index_column(data_dir):
    path = data_dir / "perov_sample.csv"
    assert path.read_text().startswith(",material_id,cif,")
    raw = pd.read_csv(path, index_col=0)
    table = read_cdvae_csv(path)
    assert len(table) == len(raw) == 8
    assert table.ids == [str(i) for i in raw["material_id"]]
    assert all(c.num_atoms == 5 for c in table.crystals)
    assert not any(str(c).startswith("Unnamed") for c in table.properties.columns)
    np.testing.assert_array_equal(table.properties["heat_ref"].to_numpy(), raw["heat_ref"].to_numpy())


@pytest.mark.parametrize("name", ["mp20_sample.csv", "perov_sample.csv"])
def test_gzip_copy_loads_identically(tmp_path, data_dir, name):
    src = data_dir / name
    gz = tmp_path / (name + ".gz")
    with open(src, "rb") as fin, gzip.open(gz, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    plain, packed = read_cdvae_csv(src), read_cdvae_csv(gz)
    assert packed.ids == plain.ids
    _assert_same_crystals(packed.crystals, plain.crystals)
    pd.testing.assert_frame_equal(packed.properties, plain.properties)


def test_limit_and_max_atoms(data_dir):
    path = data_dir / "mp20_sample.csv"
    full = read_cdvae_csv(path)
    head = read_cdvae_csv(path, limit=5)
    assert head.ids == full.ids[:5]
    with pytest.warns(UserWarning, match="dropped"):
        small = read_cdvae_csv(path, max_atoms=10)
    assert small.ids == [i for i, c in zip(full.ids, full.crystals, strict=True) if c.num_atoms <= 10]
    assert 0 < len(small) < len(full)
    assert len(small.properties) == len(small)


def test_broken_rows_are_skipped_with_one_warning(data_dir):
    path = data_dir / "broken.csv"
    raw = pd.read_csv(path)
    good_ids = [i for i in raw["material_id"] if not i.startswith("bad-")]
    assert len(raw) == 9 and len(good_ids) == 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_cdvae_csv(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 3" in message and "of 9" in message
    assert "broken.csv" in message
    assert table.n_skipped == 3
    assert table.ids == good_ids
    assert len(table.properties) == 6
    assert table.properties["material_id"].tolist() == good_ids
    good_cifs = raw.loc[~raw["material_id"].str.startswith("bad-"), "cif"]
    _assert_same_crystals(table.crystals, [Crystal.from_cif(c) for c in good_cifs])


def test_broken_fixture_rows_fail_for_the_intended_reasons(data_dir):
    raw = pd.read_csv(data_dir / "broken.csv").set_index("material_id")
    assert pd.isna(raw.loc["bad-empty", "cif"])
    with pytest.raises(CrystalError, match="could not parse CIF"):
        Crystal.from_cif(raw.loc["bad-garbage", "cif"])
    assert " Xx " in raw.loc["bad-unknown-element", "cif"]
    with pytest.raises(CrystalError, match="unknown element"):
        Crystal.from_cif(raw.loc["bad-unknown-element", "cif"])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_cdvae_csv(tmp_path / "nope.csv")


def test_csv_without_cif_column(tmp_path):
    path = tmp_path / "nocif.csv"
    pd.DataFrame({"material_id": ["a", "b"], "structure": ["x", "y"]}).to_csv(path, index=False)
    with pytest.raises(CrystalError, match="'cif'"):
        read_cdvae_csv(path)


def test_csv_without_material_id_uses_row_numbers(tmp_path, data_dir):
    raw = pd.read_csv(data_dir / "mp20_sample.csv").drop(columns=["material_id"]).iloc[:3]
    path = tmp_path / "noid.csv"
    raw.to_csv(path, index=False)
    assert read_cdvae_csv(path).ids == ["0", "1", "2"]


# --- npz cache ------------------------------------------------------------------------------------
def test_save_load_arrays_round_trip(tmp_path, data_dir, structures):
    crystals = read_cdvae_csv(data_dir / "mp20_sample.csv").crystals + [Crystal.from_structure(s) for s in structures]
    path = tmp_path / "cache.npz"
    save_arrays(crystals, path)
    back = load_arrays(path)
    _assert_same_crystals(back, crystals)  # bit-exact
    with np.load(path, allow_pickle=False) as d:
        assert d["num_atoms"].tolist() == [c.num_atoms for c in crystals]


# --- batch ------------------------------------------------------------------------------------------
def test_batch_round_trip(data_dir, structures):
    crystals = read_cdvae_csv(data_dir / "mp20_sample.csv").crystals[:5]
    crystals += [Crystal.from_structure(s) for s in structures]
    batch = CrystalBatch.from_crystals(crystals, dtype=torch.float64)
    n = [c.num_atoms for c in crystals]
    assert batch.num_graphs == len(crystals)
    assert batch.num_atoms.tolist() == n
    assert batch.batch.tolist() == [i for i, k in enumerate(n) for _ in range(k)]
    assert batch.F.shape == (sum(n), 3) and batch.L.shape == (len(crystals), 3, 3)
    assert batch.F.dtype == torch.float64 and batch.Z.dtype == torch.long
    _assert_same_crystals(batch.to_crystals(), crystals)  # bit-exact in float64
    batch32 = CrystalBatch.from_crystals(crystals)
    assert batch32.F.dtype == torch.float32
    _assert_same_crystals(batch32.to_crystals(), crystals, atol=1e-5)


def test_batch_index():
    assert batch_index(torch.tensor([2, 1, 3])).tolist() == [0, 0, 1, 2, 2, 2]


def test_fully_connected_edges():
    num_atoms = torch.tensor([3, 1, 4, 2])
    src, dst = fully_connected_edges(num_atoms)
    graph = batch_index(num_atoms)
    assert len(src) == len(dst) == int((num_atoms**2).sum())
    assert torch.equal(graph[src], graph[dst])  # never across crystals
    per_graph = torch.bincount(graph[src], minlength=len(num_atoms))
    assert per_graph.tolist() == (num_atoms**2).tolist()
    offsets = torch.cumsum(num_atoms, 0) - num_atoms
    for g, n in enumerate(num_atoms.tolist()):
        mask = graph[src] == g
        pairs = set(zip(src[mask].tolist(), dst[mask].tolist(), strict=True))
        o = int(offsets[g])
        assert pairs == {(o + i, o + j) for i in range(n) for j in range(n)}


def test_scatter_mean_and_sum_match_loops():
    gen = torch.Generator().manual_seed(0)
    index = torch.tensor([0, 2, 2, 0, 3, 2, 0])
    src = torch.randn(len(index), 4, 2, generator=gen, dtype=torch.float64)
    dim_size = 5  # groups 1 and 4 are empty
    mean = scatter_mean(src, index, dim_size)
    total = scatter_sum(src, index, dim_size)
    assert mean.shape == (dim_size, 4, 2)
    for g in range(dim_size):
        rows = src[index == g]
        expected_sum = rows.sum(0)
        expected_mean = rows.mean(0) if len(rows) else torch.zeros(4, 2, dtype=torch.float64)
        torch.testing.assert_close(total[g], expected_sum, rtol=0, atol=1e-14)
        torch.testing.assert_close(mean[g], expected_mean, rtol=0, atol=1e-14)


def test_to_crystals_reports_degenerate_samples():
    import numpy as np
    import pytest
    import torch

    from matinvent.crystal.batch import CrystalBatch
    from matinvent.crystal.record import Crystal, CrystalError

    good = Crystal(Z=np.array([11, 17]), F=np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), L=np.eye(3) * 5.6)
    batch = CrystalBatch.from_crystals([good, good])
    batch.L[1, 0, 0] = torch.nan
    with pytest.raises(CrystalError, match="NaN"):
        batch.to_crystals()
    out = batch.to_crystals(strict=False)
    assert out[1] is None and out[0].allclose(good)
