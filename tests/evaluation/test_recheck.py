"""Re-checking a run's hits: relax, re-score with the task's oracles and the MLIP, E_hull.

The bookkeeping runs on a fake run folder with a stub relaxer (no MLIP); one module-scoped run
relaxes a compressed NaCl, MgO and an impossible LiF with SevenNet-0 (skipped without the extra).
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matinvent.cli import main
from matinvent.crystal.record import Crystal
from matinvent.evaluation import recheck
from matinvent.io.run_memory import CrystalRecord, Memory, read_memory
from matinvent.oracles.mlip import MLIPRelaxer, Relaxed, mp_elemental_references

needs_sevenn = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra (sevenn)")

E_FORM_ON_HULL = {"NaCl": -2.109608, "MgO": -3.053367}  # eV/atom, the shipped hull's values


def fcc(a: float) -> Lattice:
    """Primitive fcc cell of a cubic lattice constant a (Å)."""
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def rocksalt(a: float, cation: str, anion: str) -> Structure:
    return Structure(fcc(a), [cation, anion], [[0, 0, 0], [0.5] * 3])


def record(i: int, s: Structure | None, props: dict[str, float], reward: float, hit: bool, valid: bool = True):
    cif = Crystal.from_structure(s).to_cif() if s is not None else "not a cif"
    formula = s.composition.reduced_formula if s is not None else "Xx"
    return CrystalRecord(
        run_id="r1", method="prior", iteration=i // 4, idx=i % 4, formula=formula, cif=cif, valid=valid,
        failed=False, properties=props, reward=reward, filtered_reward=reward, hit=hit,
    )  # fmt: skip


def make_run(root, task: str, records: list[CrystalRecord], properties: list[str], summary: bool = True):
    """A run folder as ``matinvent optimize`` leaves it (run.json, memory.sqlite, summary.json)."""
    run = root / "run"
    run.mkdir()
    info = {"task": task, "method": "prior", "seed": 0, "budget": len(records), "prior": "none",
            "windows": "", "properties": properties, "config": {}, "run_id": "r1"}  # fmt: skip
    (run / "run.json").write_text(json.dumps(info))
    memory = Memory(run / "memory.sqlite", properties)
    memory.add(records)
    memory.close()
    if summary:
        (run / "summary.json").write_text(json.dumps({"task": task, "hits": 99, "burden": None}))
    return run


class StubRelaxer:
    """'Relaxes' by scaling the cell to a chosen density, at a chosen formation energy (per formula)."""

    model = "stub"
    fmax = 0.05
    mp2020_correction = False

    def __init__(self, targets: dict[str, tuple[float, float]]) -> None:
        self.targets = targets  # formula -> (density g/cm³, formation energy eV/atom)

    def relaxed(self, s: Structure) -> Relaxed:
        formula = s.composition.reduced_formula
        if formula not in self.targets:
            return Relaxed(None, math.nan, False, 0, f"stub cannot relax {formula}")
        density, e_form = self.targets[formula]
        out = s.copy()
        out.scale_lattice(s.volume * float(s.density) / density)
        refs = mp_elemental_references()
        mu = sum(refs[el.symbol] * n for el, n in s.composition.items()) / s.composition.num_atoms
        return Relaxed(out, mu + e_form, True, 3)


@pytest.fixture
def stub_run(tmp_path):
    """Shipped density task (11 ± 0.5 g/cm³): NaCl stays in, MgO relaxes out, KCl fails, one CIF is broken."""
    nacl, mgo, kcl = rocksalt(5.69, "Na", "Cl"), rocksalt(4.257, "Mg", "O"), rocksalt(6.3, "K", "Cl")
    records = [
        record(0, nacl, {"density": 11.2}, 1.0, True),
        record(1, mgo, {"density": 10.9}, 1.0, True),
        record(2, nacl.copy(), {"density": 11.4}, 0.9, True),  # same formula, lower reward: not checked
        record(3, kcl, {"density": 10.6}, 1.0, True),
        record(4, None, {"density": 11.0}, 1.0, True),  # an unreadable record
        record(5, rocksalt(4.0, "Li", "F"), {"density": 3.0}, 0.2, False),  # not a hit
        record(6, mgo.copy(), {"density": None}, 0.0, False, valid=False),  # invalid: no evaluation
    ]
    run = make_run(tmp_path, "density", records, ["density"])
    relaxer = StubRelaxer({"NaCl": (11.1, E_FORM_ON_HULL["NaCl"] + 0.05), "MgO": (5.0, E_FORM_ON_HULL["MgO"])})
    return run, relaxer


# ----------------------------------------------------------------------------- no MLIP


def test_distinct_hits_keep_the_best_reward_per_formula(stub_run):
    hits = recheck.distinct_hits(read_memory(stub_run[0]))
    assert list(hits["formula"]) == ["NaCl", "MgO", "KCl", "Xx"]
    assert hits.loc[0, "reward"] == 1.0 and hits.loc[0, "density"] == 11.2


def test_stub_recheck_counts_survivors_and_writes_files(stub_run):
    run, relaxer = stub_run
    out = recheck.recheck_run(run, n_max=None, relaxer=relaxer, progress=False)
    assert out["n_hits_distinct"] == 4 and out["n_checked"] == 4 and out["subset"] == "all"
    assert out["evaluations"] == 6 and out["n_failed"] == 2 and out["frac_still_hit_mlip"] is None
    nacl, mgo, kcl, broken = out["hits"]
    assert nacl["original"]["density"] == 11.2 and nacl["relaxed"]["density"] == pytest.approx(11.1)
    assert nacl["still_hit"] and nacl["e_above_hull"] == pytest.approx(0.05, abs=1e-5) and nacl["survives"]
    assert mgo["relaxed"]["density"] == pytest.approx(5.0) and mgo["still_hit"] is False and not mgo["survives"]
    assert mgo["e_above_hull"] == pytest.approx(0.0, abs=1e-5) and mgo["e_hull_le_0.1"] is True
    assert kcl["still_hit"] is None and kcl["e_above_hull"] is None and "stub cannot relax KCl" in kcl["reason"]
    assert broken["survives"] is False and broken["reason"].startswith("CIF:")
    assert out["frac_still_hit"] == 0.25 and out["frac_e_hull_le_0.1"] == 0.5 and out["frac_survive"] == 0.25
    assert out["burden_rechecked"] == pytest.approx(6 / (4 * 0.25)) and out["burden_rechecked_is_estimate"] is False
    assert out["median_e_above_hull"] == pytest.approx(0.025, abs=1e-5)

    assert json.loads((run / "recheck.json").read_text()) == out
    table = pd.read_csv(run / "recheck.csv")
    assert list(table["formula"]) == ["NaCl", "MgO", "KCl", "Xx"]
    assert {"density", "density_relaxed", "e_above_hull", "still_hit", "survives", "reason"} <= set(table.columns)
    assert math.isnan(table.loc[2, "density_relaxed"]) and table.loc[2, "survives"] == False  # noqa: E712
    cifs = sorted((run / "recheck").glob("*.cif"))
    assert [c.name for c in cifs] == ["000_NaCl_1.cif", "001_MgO_2.cif"] and nacl["cif"] == "recheck/000_NaCl_1.cif"
    assert float(Structure.from_file(cifs[1]).density) == pytest.approx(5.0, rel=1e-4)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["hits"] == 99 and summary["recheck"]["frac_survive"] == 0.25
    assert set(summary["recheck"]) == set(recheck.HEADLINE)
    assert not list(run.glob("*.tmp"))


def test_a_stability_task_takes_e_hull_from_the_recheck_relaxation_and_hull(tmp_path, monkeypatch):
    """No second MLIP oracle relaxes the relaxed cells against another hull: E_hull is the recheck's own."""
    from matinvent import oracles
    from matinvent.scoring.tasks import task_from_dict

    nacl = rocksalt(5.69, "Na", "Cl")
    run = make_run(tmp_path, "stable_density", [record(0, nacl, {"density": 11.2, "e_above_hull": 0.0}, 1.0, True)],
                   ["density", "e_above_hull"])  # fmt: skip
    task = task_from_dict({"name": "stable_density", "properties": {
        "density": {"target": "range", "center": 11, "tolerance": 0.5},
        "e_above_hull": {"target": "range", "center": 0, "tolerance": 0.1}}})  # fmt: skip
    real = oracles.get_oracle

    def no_mlip_oracle(name, **kw):
        assert name != "e_above_hull", "recheck built a second E_hull oracle"
        return real(name, **kw)

    monkeypatch.setattr(oracles, "get_oracle", no_mlip_oracle)
    relaxer = StubRelaxer({"NaCl": (11.1, E_FORM_ON_HULL["NaCl"] + 0.05)})
    (row,) = recheck.recheck_run(run, n_max=None, relaxer=relaxer, progress=False, task=task)["hits"]
    assert row["e_above_hull"] == pytest.approx(0.05, abs=1e-5)
    assert row["relaxed"]["e_above_hull"] == row["mlip"]["e_above_hull"] == row["e_above_hull"]
    assert row["still_hit"] and row["survives"]


def test_subset_respects_n_max_and_is_seeded(stub_run):
    run, relaxer = stub_run
    (run / "summary.json").unlink()
    a = recheck.recheck_run(run, n_max=2, seed=3, relaxer=relaxer, progress=False)
    b = recheck.recheck_run(run, n_max=2, seed=3, relaxer=relaxer, progress=False)
    assert a["n_checked"] == 2 and a["subset"] == "random 2 of 4, seed 3" and a["burden_rechecked_is_estimate"]
    assert a["checked_ids"] == b["checked_ids"] and len(set(a["checked_ids"])) == 2
    assert {tuple(recheck.recheck_run(run, n_max=2, seed=s, relaxer=relaxer, progress=False)["checked_ids"])
            for s in range(6)} != {tuple(a["checked_ids"])}  # fmt: skip
    assert len(pd.read_csv(run / "recheck.csv")) == 2 and not (run / "summary.json").exists()
    assert recheck.recheck_run(run, n_max=10, relaxer=relaxer, progress=False)["subset"] == "all"
    with pytest.raises(ValueError, match="n_max"):
        recheck.recheck_run(run, n_max=0, relaxer=relaxer, progress=False)


def test_missing_files_and_unknown_task_are_named(stub_run, tmp_path):
    run, relaxer = stub_run
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "task": "my_own_task"}))
    with pytest.raises(ValueError, match=r"run.json: unknown task 'my_own_task'.*--task"):
        recheck.recheck_run(run, relaxer=relaxer, progress=False)
    (run / "memory.sqlite").unlink()
    with pytest.raises(FileNotFoundError, match="memory.sqlite"):
        recheck.recheck_run(run, relaxer=relaxer, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="run.json"):
        recheck.recheck_run(empty, relaxer=relaxer, progress=False)
    (empty / "run.json").write_text("{")
    with pytest.raises(ValueError, match="run.json"):
        recheck.recheck_run(empty, relaxer=relaxer, progress=False)


def test_run_without_hits_gives_empty_numbers(tmp_path):
    run = make_run(tmp_path, "density", [record(0, rocksalt(5.69, "Na", "Cl"), {"density": 2.1}, 0.0, False)],
                   ["density"])  # fmt: skip
    out = recheck.recheck_run(run, relaxer=StubRelaxer({}), progress=False)
    assert out["n_hits_distinct"] == 0 and out["n_checked"] == 0 and out["hits"] == []
    assert out["frac_survive"] is None and out["burden_rechecked"] is None


def test_cli_recheck_prints_the_headline(stub_run, monkeypatch, capsys):
    run, relaxer = stub_run
    monkeypatch.setattr(recheck, "MLIPRelaxer", lambda *a, **k: relaxer)
    assert main(["recheck", str(run), "--n-max", "3", "--seed", "1", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "frac_survive" in printed and "random 3 of 4, seed 1" in printed and "recheck.json" in printed
    assert json.loads((run / "recheck.json").read_text())["n_checked"] == 3
    (run / "run.json").unlink()
    assert main(["recheck", str(run)]) == 2
    assert "run.json" in capsys.readouterr().err


def test_rehull_rescores_e_hull_and_survival_without_relaxing(stub_run, tmp_path, capsys):
    run, relaxer = stub_run
    with pytest.raises(FileNotFoundError, match="recheck.json"):
        recheck.rehull_run(run)
    before = recheck.recheck_run(run, n_max=None, relaxer=relaxer, progress=False)
    cifs = sorted(p.read_text() for p in (run / "recheck").glob("*.cif"))
    # another hull puts NaCl 0.1 eV/atom lower (the relaxed NaCl, 0.05 above the old hull, is now 0.15
    # above) and MgO 0.3 higher (MgO now 0.3 below it: a hull gap, counted in n_far_below_hull)
    hull = tmp_path / "hull.csv"
    hull.write_text(
        f"formula,e_form_per_atom\nNaCl,{E_FORM_ON_HULL['NaCl'] - 0.1}\nMgO,{E_FORM_ON_HULL['MgO'] + 0.3}\n"
    )
    assert main(["recheck", str(run), "--rehull", "--hull", str(hull)]) == 0
    assert "rewrote" in capsys.readouterr().out
    out = json.loads((run / "recheck.json").read_text())
    nacl, mgo, kcl, broken = out["hits"]
    assert nacl["e_above_hull"] == pytest.approx(0.15, abs=1e-5) and nacl["e_hull_le_0.1"] is False
    assert nacl["still_hit"] is True and nacl["survives"] is False
    assert mgo["e_above_hull"] == pytest.approx(-0.3, abs=1e-5) and mgo["survives"] is False  # still not a hit
    assert before["n_far_below_hull"] == 0 and out["n_far_below_hull"] == 1
    assert kcl["e_above_hull"] is None and broken["survives"] is False
    assert out["frac_survive"] == 0.0 and out["burden_rechecked"] is None and before["frac_survive"] == 0.25
    assert out["frac_e_hull_le_0.1"] == 0.25 and out["hull"] == str(hull)
    assert out["wall_s"] == before["wall_s"] and out["checked_ids"] == before["checked_ids"]
    assert json.loads((run / "summary.json").read_text())["recheck"]["frac_survive"] == 0.0
    assert pd.read_csv(run / "recheck.csv")["survives"].tolist() == [False] * 4
    assert sorted(p.read_text() for p in (run / "recheck").glob("*.cif")) == cifs  # untouched


# ----------------------------------------------------------------------------- SevenNet-0


TASK_YAML = """name: rocksalt_check
reduce: min
properties:
  density: {target: range, center: 3.15, tolerance: 0.85}
  formation_energy: {target: below, threshold: -1.0}
"""


@pytest.fixture(scope="module")
def sevennet_recheck(tmp_path_factory):
    """NaCl compressed to 2.47 g/cm³ (inside 2.3–4.0; relaxes to ≈ 2.1), MgO near its ground state,
    LiF with overlapping atoms (fails before the model)."""
    root = tmp_path_factory.mktemp("recheck")
    nacl, mgo = rocksalt(5.40, "Na", "Cl"), rocksalt(4.21, "Mg", "O")
    lif = Structure(Lattice.cubic(2.0), ["Li", "F"], [[0, 0, 0], [0.1, 0, 0]])  # 0.2 Å apart
    props = {s.composition.reduced_formula: {"density": float(s.density), "formation_energy": -2.0}
             for s in (nacl, mgo, lif)}  # fmt: skip
    records = [record(i, s, props[s.composition.reduced_formula], 1.0, True) for i, s in enumerate((nacl, mgo, lif))]
    run = make_run(root, "rocksalt_check", records, ["density", "formation_energy"])
    task = root / "task.yaml"
    task.write_text(TASK_YAML)
    relaxer = MLIPRelaxer("sevennet-0", max_steps=60)
    return run, recheck.recheck_run(run, n_max=None, relaxer=relaxer, task=task, progress=False), relaxer


@needs_sevenn
def test_sevennet_recheck_of_rocksalts(sevennet_recheck):
    run, out, relaxer = sevennet_recheck
    nacl, mgo, lif = out["hits"]
    assert 2.3 < nacl["original"]["density"] < 4.0 and nacl["relaxed"]["density"] < 2.3
    assert nacl["still_hit"] is False and nacl["survives"] is False
    assert mgo["still_hit"] and mgo["still_hit_mlip"] and mgo["survives"] and 3.3 < mgo["relaxed"]["density"] < 3.7
    for row in (nacl, mgo):
        assert abs(row["e_above_hull"]) < 0.2 and row["relax_converged"] and row["rmsd"] < 0.1
        assert row["mlip"]["formation_energy"] == row["e_form_mlip"] < -1.0  # the relaxation's own E_form
        assert row["relaxed"]["formation_energy"] < -1.0  # CGCNN on the relaxed structure
    assert lif["still_hit"] is None and "closer than" in lif["reason"] and lif["e_above_hull"] is None
    assert relaxer.n_relaxations == 3  # MLIP values reuse the relaxation
    assert out["frac_still_hit"] == out["frac_still_hit_mlip"] == out["frac_survive"] == pytest.approx(1 / 3)
    assert out["model"] == "sevennet-0" and out["task"] == "rocksalt_check"
    cif = Structure.from_file(run / mgo["cif"])
    assert float(cif.density) == pytest.approx(mgo["relaxed"]["density"], rel=1e-4)
    assert np.isfinite(pd.read_csv(run / "recheck.csv")["formation_energy_mlip"][:2]).all()


def test_the_recheck_relaxes_with_the_model_the_loop_did_not_use(stub_run, monkeypatch):
    run, relaxer = stub_run
    asked = []

    def make(model, *a, **k):
        asked.append(model)
        relaxer.model = model
        return relaxer

    monkeypatch.setattr(recheck, "MLIPRelaxer", make)
    info = json.loads((run / "run.json").read_text())
    assert main(["recheck", str(run), "--threads", "1"]) == 0  # the loop relaxed nothing: SevenNet-0
    (run / "run.json").write_text(json.dumps({**info, "config": {**info.get("config", {}), "relax": "mlip"}}))
    assert main(["recheck", str(run), "--threads", "1"]) == 0  # the loop relaxed with SevenNet-0: CHGNet
    assert json.loads((run / "recheck.json").read_text())["model"] == "chgnet"
    assert main(["recheck", str(run), "--model", "sevennet-0", "--threads", "1"]) == 0  # asked for: that one
    assert asked == ["sevennet-0", "chgnet", "sevennet-0"]


class StubFormationRelaxer(StubRelaxer):
    """The stub with the MLIP's formation energy (the value it relaxed to)."""

    def formation_energy(self, structures):
        return np.array([self.targets[s.composition.reduced_formula][1] for s in structures])


def test_a_relaxed_run_survives_on_the_other_mlip_s_properties_and_heads_the_summary(tmp_path):
    mgo, nacl = rocksalt(4.257, "Mg", "O"), rocksalt(5.69, "Na", "Cl")
    records = [
        record(0, mgo, {"formation_energy": -3.0}, 1.0, True),
        record(1, nacl, {"formation_energy": -2.6}, 1.0, True),
        record(2, rocksalt(4.0, "Li", "F"), {"formation_energy": -1.0}, 0.3, False),
        record(3, rocksalt(4.0, "Li", "F"), {"formation_energy": -1.0}, 0.3, False),
    ]
    run = make_run(tmp_path, "formation_energy", records, ["formation_energy"], summary=False)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "config": {"relax": "mlip"}}))
    first = {"task": "formation_energy", "method": "prior", "seed": 0, "budget": 4, "prior": "p", "evaluations": 4}
    (run / "summary.json").write_text(json.dumps({**first, "hits": 2, "evals_per_hit": 2.0, "finished": True}))
    # the other MLIP: MgO keeps E_form -3.05 (< -2.5, a hit), NaCl relaxes to -2.06 (out); both near the hull
    relaxer = StubFormationRelaxer(
        {"MgO": (3.58, E_FORM_ON_HULL["MgO"]), "NaCl": (2.16, E_FORM_ON_HULL["NaCl"] + 0.05)}
    )
    out = recheck.recheck_run(run, n_max=None, relaxer=relaxer, progress=False)
    assert out["survives_on"] == "still_hit_mlip"
    by = {h["formula"]: h for h in out["hits"]}
    assert by["MgO"]["still_hit_mlip"] is True and by["NaCl"]["still_hit_mlip"] is False
    assert [by[f]["survives"] for f in ("MgO", "NaCl")] == [True, False]  # the CGCNN flags do not decide
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary)[:7] == ["task", "method", "seed", "budget", "evals_per_surviving_hit", "survival",
                                 "surviving_hits"]  # fmt: skip
    assert summary["survival"] == 0.5 and summary["surviving_hits"] == 1.0
    assert summary["evals_per_surviving_hit"] == pytest.approx(4 / (2 * 0.5))  # evaluations / surviving hits
