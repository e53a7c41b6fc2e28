"""Issue 33: structure-level uniqueness (StructureMatcher) beside the paper's reduced-formula one."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from matinvent.rl.uniqueness import UniqueKeys


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])


def cesium_chloride(a: float = 3.3) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])


def test_formula_mode_counts_polymorphs_as_one():
    keys = UniqueKeys("formula")
    assert [keys.key("NaCl", s) for s in (rocksalt(), cesium_chloride())] == ["NaCl", "NaCl"]


def test_structure_mode_tells_polymorphs_apart_and_matches_a_supercell_and_a_strained_copy():
    keys = UniqueKeys("structure")
    strained = rocksalt(5.70)  # 1 % larger: the same structure within StructureMatcher's tolerances
    supercell = rocksalt().make_supercell([2, 1, 1], in_place=False)
    got = [keys.key("NaCl", s) for s in (rocksalt(), cesium_chloride(), strained, supercell, cesium_chloride(3.35))]
    assert got == ["NaCl#0", "NaCl#1", "NaCl#0", "NaCl#0", "NaCl#1"]
    assert keys.key("KCl", rocksalt()) == "KCl#0"  # another formula starts its own classes
    assert keys.key("NaCl", None) == "NaCl#2"  # a structure that cannot be compared is a class of its own


def test_state_round_trip_gives_the_keys_of_an_uninterrupted_run():
    a = UniqueKeys("structure")
    a.key("NaCl", rocksalt())
    b = UniqueKeys("formula")
    b.load_state_dict(a.state_dict())
    assert b.mode == "structure"
    assert b.key("NaCl", cesium_chloride()) == a.key("NaCl", cesium_chloride()) == "NaCl#1"
    assert b.key("NaCl", rocksalt(5.66)) == "NaCl#0"


def test_an_unknown_mode_names_the_choices():
    with pytest.raises(ValueError, match="unique_by must be one of formula, structure"):
        UniqueKeys("composition")


# --- in the loop -------------------------------------------------------------------------------------


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from rl_toy import save_tiny_prior

    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")


def _run(prior, out, unique_by, callback=None, resume=False):
    from rl_toy import TASK, LightFraction

    from matinvent.rl import RLConfig, optimize
    from matinvent.scoring.scorer import Scorer

    cfg = RLConfig(prior=str(prior), batch_size=6, sample_steps=None, validity="none", kl_steps=2, threads=1,
                   replay_per_iter=2, unique_by=unique_by, df_tol=0, df_buff=1)  # fmt: skip
    scorer = Scorer(TASK, oracles={"light": LightFraction()})
    return optimize(TASK, "matinvent", 24, 0, out, cfg, scorer=scorer, progress=False, callback=callback, resume=resume)


def test_structure_keys_drive_the_filter_and_the_hits_and_resume_exactly(tiny_prior, tmp_path):
    import pandas as pd

    from matinvent.io.run_memory import read_memory

    by_formula = _run(tiny_prior, tmp_path / "f", "formula")
    by_structure = _run(tiny_prior, tmp_path / "s", "structure")
    assert (by_formula["unique_by"], by_structure["unique_by"]) == ("formula", "structure")
    # independently: with Buff 1 a crystal keeps its reward only if no earlier evaluated crystal of the run has the
    # same formula (formula keys) or the same formula and a StructureMatcher match (structure keys)
    from pymatgen.analysis.structure_matcher import StructureMatcher

    fit = StructureMatcher().fit
    for folder, by_structure_keys in (("f", False), ("s", True)):
        rows = read_memory(tmp_path / folder).query("valid == 1").sort_values("id")
        seen: list[tuple[str, Structure]] = []
        columns = (rows["formula"], rows["cif"], rows["reward"], rows["filtered_reward"])
        for formula, cif, reward, filtered in zip(*columns, strict=True):
            s = Structure.from_str(cif, fmt="cif")
            same = [f == formula and (not by_structure_keys or fit(t, s)) for f, t in seen]
            assert filtered == (0.0 if any(same) else reward), (folder, formula)
            seen.append((formula, s))
    assert by_structure["hits"] >= by_formula["hits"] and by_structure["evaluations"] == by_formula["evaluations"]

    def kill(event, iteration):
        if event == "scored" and iteration == 1:
            raise Killed

    with pytest.raises(Killed):
        _run(tiny_prior, tmp_path / "k", "structure", callback=kill)
    resumed = _run(tiny_prior, tmp_path / "k", "structure", resume=True)
    a = read_memory(tmp_path / "s").drop(columns=["id", "created", "run_id"])
    b = read_memory(tmp_path / "k").drop(columns=["id", "created", "run_id"])
    pd.testing.assert_frame_equal(a, b)
    assert resumed["hits"] == by_structure["hits"] and resumed["diversity_ratio"] == by_structure["diversity_ratio"]
