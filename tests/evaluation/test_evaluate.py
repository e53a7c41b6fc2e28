"""Validity, uniqueness, novelty, element-count and distribution metrics on hand-built crystals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition

from matinvent.crystal.record import Crystal
from matinvent.evaluation.distributions import element_freq_distance, element_frequencies
from matinvent.evaluation.matching import novel_mask, unique_indices
from matinvent.evaluation.sample_metrics import (
    composition_valid,
    evaluate_crystals,
    load_sample_dir,
    structure_valid,
    write_detailed,
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


def squeezed_nacl() -> Crystal:
    """Na and Cl 1.0 Å apart: valid for the 0.5 Å check and SMACT, not physically valid."""
    return Crystal(Z=np.array([11, 17]), F=np.array([[0.3, 0.5, 0.5], [0.4, 0.5, 0.5]]), L=np.eye(3) * 10)


def spread(z: list[int], box: float = 12.0) -> Crystal:
    """One atom of each element on a line 3 Å apart (physically valid, SMACT aside)."""
    F = np.array([[(0.5 + 3 * i) / box % 1.0, 0.5, 0.5] for i in range(len(z))])
    return Crystal(Z=np.array(z), F=F, L=np.diag([box * len(z) / 3, box, box]))


def test_evaluate_counts_unbuildable_samples_as_invalid():
    ev = evaluate_crystals([rocksalt(), silicon(), None, None], reference=[rocksalt(), silicon()])
    assert ev.n_generated == 4 and ev.n_readable == 2
    assert ev.physical_validity == 0.5
    assert ev.structure_validity == 0.5
    assert ev.composition_validity == 0.5
    assert ev.validity == 0.5
    assert ev.uniqueness == 0.5
    assert ev.novelty == 0.0
    assert ev.wdist_density == pytest.approx(0.0, abs=1e-12)
    assert ev.wdist_num_elements == pytest.approx(0.0, abs=1e-12)
    assert ev.n_elements_histogram == {"1": 1, "2": 1} == ev.reference_n_elements_histogram
    assert [r["reason"] != "" for r in ev.rows] == [False, False, True, True]


def test_validity_option_chooses_the_gate_of_the_valid_set():
    crystals = [rocksalt(), squeezed_nacl()]
    physical = evaluate_crystals(crystals, reference=[rocksalt()])
    cdvae = evaluate_crystals(crystals, reference=[rocksalt()], validity="cdvae")
    assert (physical.physical_validity, physical.structure_validity, physical.composition_validity) == (0.5, 1, 1)
    assert physical.validity == 0.5 and cdvae.validity == 1.0
    assert physical.validity_gate == "physical" and cdvae.validity_gate == "cdvae"
    # only the cdvae gate lets the squeezed crystal (0.097 g/cm³, a 10 Å box) into the density distance
    assert physical.wdist_density == pytest.approx(0.0, abs=1e-12)
    assert cdvae.wdist_density == pytest.approx(abs(cdvae.rows[1]["density"] - cdvae.rows[0]["density"]) / 2)
    assert physical.novelty == 0.0 and cdvae.novelty == 0.5
    row = physical.rows[1]
    assert (row["physical_valid"], row["structure_valid"], row["valid"]) == (False, True, False)
    assert row["reason"].startswith("physical: pair Na–Cl 1.00 Å")
    with pytest.raises(ValueError, match="unknown validity"):
        evaluate_crystals(crystals, validity="full")


def test_element_count_histogram_and_many_element_fraction():
    crystals = [silicon(), rocksalt(), rocksalt((5.4), (19, 35)), spread([3, 11, 19, 37, 55, 9, 17])]
    ev = evaluate_crystals([*crystals, None])
    assert ev.n_elements_histogram == {"1": 1, "2": 2, "3": 0, "4": 0, "5": 0, "6": 0, "7": 1}
    assert ev.frac_over_5_elements == pytest.approx(1 / 4)  # of the readable crystals
    assert "n_elements_histogram  1:1 2:2 3:0 4:0 5:0 6:0 7:1" in ev.table().replace("   ", " ")


def test_element_frequencies_count_each_crystal_once_per_element():
    # crystals containing Na: 2 (NaCl, NaCl3), Cl: 2, K: 1 → 5 memberships, stoichiometry ignored
    freqs = element_frequencies([Composition("NaCl"), Composition("NaCl3"), Composition("K")])
    assert freqs == pytest.approx({"Cl": 2 / 5, "K": 1 / 5, "Na": 2 / 5})
    assert element_frequencies([rocksalt(), silicon()]) == pytest.approx({"Cl": 1 / 3, "Na": 1 / 3, "Si": 1 / 3})


def test_element_freq_distance_on_hand_counted_sets():
    # {NaCl, Si}: Na, Cl, Si each 1/3; {NaCl, KCl}: Na 1/4, K 1/4, Cl 2/4.
    # Overlap Σ min(p, q) = 1/4 (Na) + 1/3 (Cl) = 7/12, so the total variation is 1 − 7/12 = 5/12.
    generated = [Composition("NaCl"), Composition("Si")]
    reference = [Composition("NaCl"), Composition("KCl")]
    assert element_freq_distance(generated, reference) == pytest.approx(5 / 12)
    assert element_freq_distance(reference, generated) == pytest.approx(5 / 12)
    assert element_freq_distance([silicon()], [rocksalt()]) == pytest.approx(1.0)  # no shared element
    assert element_freq_distance([rocksalt()], [Composition("Na3Cl3")]) == pytest.approx(0.0, abs=1e-12)
    assert element_freq_distance([], reference) is None


def test_single_element_binary_fractions_and_element_distance_in_evaluate():
    # readable: Si (1 element), NaCl, squeezed NaCl (2) → 1/3 single, 2/3 binary; the squeezed one is not valid
    ev = evaluate_crystals([silicon(), rocksalt(), squeezed_nacl(), None], reference=[rocksalt(), silicon(), silicon()])
    assert ev.frac_single_element == pytest.approx(1 / 3) and ev.frac_binary == pytest.approx(2 / 3)
    assert ev.reference_frac_single_element == pytest.approx(2 / 3) and ev.reference_frac_binary == pytest.approx(1 / 3)
    # valid set {Si, NaCl}: Na, Cl, Si 1/3 each; reference: Na 1/4, Cl 1/4, Si 2/4 → 1 − (1/4 + 1/4 + 1/3) = 1/6
    # (with the squeezed NaCl it would be Na 2/5, Cl 2/5, Si 1/5 → 3/10)
    assert ev.element_freq_distance == pytest.approx(1 / 6)
    d = ev.to_dict()
    for key in ("frac_single_element", "frac_binary", "reference_frac_single_element", "element_freq_distance"):
        assert d[key] == getattr(ev, key) and key in ev.table()
    no_ref = evaluate_crystals([silicon(), rocksalt()])
    assert no_ref.frac_single_element == 0.5 and no_ref.element_freq_distance is None
    assert no_ref.reference_frac_binary is None


def test_detailed_rows_have_one_row_per_crystal(tmp_path):
    ev = evaluate_crystals(
        [rocksalt(), rocksalt(), squeezed_nacl(), None],
        reference=[silicon()],
        ids=["a", "b", "c", "d"],
        errors={3: "unreadable CIF"},
    )
    path = write_detailed(ev.rows, tmp_path / "detail.csv")
    df = pd.read_csv(path, keep_default_na=False)
    assert list(df.columns) == [
        "id", "formula", "n_atoms", "n_elements", "density", "physical_valid", "structure_valid",
        "composition_valid", "valid", "reason", "unique", "novel",
    ]  # fmt: skip
    assert list(df["id"]) == ["a", "b", "c", "d"]
    assert list(df["formula"]) == ["NaCl", "NaCl", "NaCl", ""]
    assert list(df["unique"]) == [True, False, True, False]  # b is a copy of a
    assert list(df["novel"]) == ["True", "True", "", ""]  # novelty of the valid set only
    assert list(df["reason"])[:2] == ["", ""] and df["reason"][3] == "unreadable CIF"
    assert float(df["density"][0]) == pytest.approx(2.164, abs=1e-3) and df["density"][3] == ""


def test_load_sample_dir_reads_cifs_and_failures(tmp_path):
    rocksalt().write_cif(tmp_path / "000000.cif")
    (tmp_path / "000001.cif").write_text("not a cif")
    (tmp_path / "sample_info.json").write_text('{"failed": [2]}')
    with pytest.warns(UserWarning, match="could not parse CIF"):
        crystals = load_sample_dir(tmp_path)
    assert [c is None for c in crystals] == [False, True, True]
    with pytest.raises(FileNotFoundError):
        load_sample_dir(tmp_path / "missing")
