"""Validity, uniqueness, novelty and distribution metrics on hand-built crystals."""

from __future__ import annotations

import numpy as np
import pytest

from matinvent.crystal import Crystal
from matinvent.evaluate import (
    composition_valid,
    evaluate_crystals,
    load_sample_dir,
    novel_mask,
    structure_valid,
    unique_indices,
)


def rocksalt(a: float = 5.64, z=(11, 17)) -> Crystal:
    F = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]
    return Crystal(Z=np.array([z[0]] * 4 + [z[1]] * 4), F=np.array(F, float), L=np.eye(3) * a)


def silicon() -> Crystal:
    F = np.array([[0, 0, 0], [0.25, 0.25, 0.25]])
    L = 5.43 * np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    return Crystal(Z=np.array([14, 14]), F=F, L=L)


def test_structure_validity_uses_periodic_distances():
    assert structure_valid(rocksalt())
    # 0.2 Å apart only through the periodic boundary
    across = Crystal(Z=np.array([11, 17]), F=np.array([[0.01, 0, 0], [0.99, 0, 0]]), L=np.eye(3) * 10)
    assert not structure_valid(across)
    close = Crystal(Z=np.array([11, 17]), F=np.array([[0.5, 0.5, 0.5], [0.53, 0.5, 0.5]]), L=np.eye(3) * 10)
    assert not structure_valid(close)
    tiny = Crystal(Z=np.array([11]), F=np.zeros((1, 3)), L=np.eye(3) * 0.4)
    assert not structure_valid(tiny)
    assert not structure_valid(None)


def test_composition_validity_follows_smact():
    assert composition_valid(rocksalt())
    na_cl2 = Crystal(
        Z=np.array([11, 17, 17]), F=np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]), L=np.eye(3) * 6
    )
    assert not composition_valid(na_cl2)  # no charge-neutral assignment
    assert composition_valid(Crystal(Z=np.array([29]), F=np.zeros((1, 3)), L=np.eye(3) * 2.5))  # metal
    assert not composition_valid(None)


def test_uniqueness_matches_rotated_and_shifted_copies():
    a = rocksalt()
    rot = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1.0]])
    b = Crystal(Z=a.Z[::-1].copy(), F=(a.F[::-1] + 0.137) % 1.0, L=a.L @ rot.T)
    c = silicon()
    assert unique_indices([a, b, c]) == [0, 2]


def test_novelty_against_reference():
    assert novel_mask([rocksalt(), silicon()], [rocksalt()]) == [False, True]


def test_evaluate_counts_unbuildable_samples_as_invalid():
    ev = evaluate_crystals([rocksalt(), silicon(), None, None], reference=[rocksalt(), silicon()])
    assert ev.n_generated == 4 and ev.n_readable == 2
    assert ev.structure_validity == 0.5
    assert ev.composition_validity == 0.5
    assert ev.uniqueness == 0.5
    assert ev.novelty == 0.0
    assert ev.wdist_density == pytest.approx(0.0, abs=1e-12)
    assert ev.wdist_num_elements == pytest.approx(0.0, abs=1e-12)


def test_load_sample_dir_reads_cifs_and_failures(tmp_path):
    rocksalt().write_cif(tmp_path / "000000.cif")
    (tmp_path / "000001.cif").write_text("not a cif")
    (tmp_path / "sample_info.json").write_text('{"failed": [2]}')
    with pytest.warns(UserWarning, match="could not parse CIF"):
        crystals = load_sample_dir(tmp_path)
    assert [c is None for c in crystals] == [False, True, True]
    with pytest.raises(FileNotFoundError):
        load_sample_dir(tmp_path / "missing")
