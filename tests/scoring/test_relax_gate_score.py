"""Relax → gate → score: the gate on the relaxed structure, stability in the hit definition, what the memory keeps,
the defaults and how a resumed run keeps the settings it started with."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure

from matinvent.config_io import ConfigError
from matinvent.io.run_memory import Memory, read_memory
from matinvent.oracles import Oracle
from matinvent.oracles.mlip.calculators import mlip_available
from matinvent.oracles.mlip.relax_step import RelaxResult
from matinvent.oracles.mlip.relaxed import site_rmsd
from matinvent.rl.config import RLConfig, resolve, validate
from matinvent.rl.run_folder import adopt_started
from matinvent.scoring.rewards import apply_stability, stability_target
from matinvent.scoring.scorer import Scorer, resolve_pipeline, scores_table
from matinvent.scoring.tasks import task_from_dict

TASK = task_from_dict(
    {"name": "dens", "properties": {"density": {"target": "range", "center": 3.6, "tolerance": 0.3, "ramp": 2.0}}}
)


def mgo(a: float = 4.21) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


class Density(Oracle):
    """Density, counting the structures it was called on."""

    name, unit = "density", "g/cm3"

    def __init__(self) -> None:
        self.seen = 0

    def evaluate(self, structures):
        self.seen += len(structures)
        return [s.density for s in structures]


def scorer_with(relaxed: list, e_hull: list[float], stability=None, oracle=None) -> Scorer:
    """A Scorer whose relaxation returns ``relaxed`` (one per valid input) with E_hull ``e_hull``."""
    scorer = Scorer(
        TASK, relax="mlip", oracles={"density": oracle or Density()}, calculator=EMT(), model="emt", stability=stability
    )

    def fake_relax(inputs):
        assert len(inputs) == len(relaxed)
        results = [
            RelaxResult(r, {"e_above_hull": e}, "", energy_drop=0.1 * k, rmsd=0.01 * k)
            for k, (r, e) in enumerate(zip(relaxed, e_hull, strict=True))
        ]
        return results, [""] * len(inputs)

    scorer._relax = fake_relax
    return scorer


# ------------------------------------------------------------------------- site RMSD


def test_site_rmsd_matches_a_closed_form_and_ignores_translation_and_the_wrap():
    start = Structure(
        Lattice.cubic(5.0), ["Na", "Cl", "Na", "Cl"], [[0.99, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5], [0.5, 0, 0.5]]
    )
    u = np.array([0.3, -0.1, 0.2])  # Å, one site moved; then everything shifted rigidly across the cell edge
    cart = start.cart_coords.copy()
    cart[0] += u
    cart += np.array([1.7, 0.4, -2.2])
    end = Structure(start.lattice, start.species, cart, coords_are_cartesian=True)
    n = len(start)
    expected = np.linalg.norm(u) * math.sqrt(n - 1) / n  # deviations from the mean displacement, closed form
    assert site_rmsd(start, end) == pytest.approx(expected, rel=1e-9)
    assert site_rmsd(start, start.copy()) == pytest.approx(0.0, abs=1e-12)
    strained = Structure(Lattice.cubic(5.5), start.species, start.frac_coords)
    assert site_rmsd(start, strained) == pytest.approx(0.0, abs=1e-12)  # a cell change alone moves no site


# ------------------------------------------------------------------------- stability in the hit definition


def test_stability_factor_is_one_inside_then_a_linear_ramp_and_zero_for_nan():
    target = stability_target(0.1, 0.2)
    e_hull = np.array([-0.05, 0.1, 0.2, 0.3, 0.5, np.nan])
    reward, hit = apply_stability(np.full(6, 0.8), np.ones(6, dtype=bool), e_hull, target)
    np.testing.assert_allclose(reward, [0.8, 0.8, 0.4, 0.0, 0.0, 0.0], atol=1e-12)
    assert hit.tolist() == [True, True, False, False, False, False]
    with pytest.raises(ValueError, match="ramp"):
        stability_target(0.1, 0.0)


def test_scorer_multiplies_rewards_by_the_stability_factor_on_the_relaxation():
    good = [mgo(), mgo(), mgo()]
    plain = scorer_with(good, [0.05, 0.2, 0.5])(good)
    stable = scorer_with(good, [0.05, 0.2, 0.5], stability=stability_target())(good)
    assert plain.hit.tolist() == [True, True, True]
    np.testing.assert_allclose(stable.reward, plain.reward * np.array([1.0, 0.5, 0.0]))
    assert stable.hit.tolist() == [True, False, False]
    np.testing.assert_allclose(stable.e_hull, [0.05, 0.2, 0.5])
    np.testing.assert_allclose(stable.energy_drop, [0.0, 0.1, 0.2])


# ------------------------------------------------------------------------- the gate on the relaxed structure


def test_gate_applies_to_the_relaxed_structure_and_a_rejected_one_is_not_scored():
    collapsed = Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.05, 0, 0]])  # 0.21 Å apart
    oracle = Density()
    scorer = scorer_with([mgo(), collapsed], [0.0, 0.0], oracle=oracle)
    scores = scorer([mgo(4.4), mgo(4.4)])
    assert scores.valid.tolist() == [True, False]
    assert scores.reason[1].startswith("after relaxation:") and scores.reason[0] == ""
    assert oracle.seen == 1  # the rejected relaxation reached no oracle
    assert scores.reward[1] == 0.0 and not scores.hit[1] and not scores.failed[1]
    assert scores.values["density"][0] == pytest.approx(mgo().density)  # scored on the relaxed cell, not 4.4 Å
    assert scores.relaxed[1] is collapsed and scores.structures[1] is None  # kept, but not what was scored
    table = scores_table(["a", "b"], scores.structures, scores)
    assert table["formula"].tolist() == ["MgO", "MgO"] and table["valid"].tolist() == [1, 0]


# ------------------------------------------------------------------------- the memory keeps both structures


def test_loop_memory_keeps_generated_and_relaxed_crystal_with_e_hull_drop_and_rmsd(tmp_path):
    from rl_toy import TASK as LIGHT
    from rl_toy import LightFraction, save_tiny_prior

    from matinvent.crystal.record import Crystal
    from matinvent.rl import optimize

    prior = save_tiny_prior(tmp_path / "prior")
    scorer = Scorer(LIGHT, relax="mlip", oracles={"light": LightFraction()}, calculator=EMT(), model="emt",
                    validity="none", stability=stability_target())  # fmt: skip

    def fake_relax(inputs):  # "relaxation": the same crystal on a 2 % larger cell, E_hull by position
        out = [Structure(Lattice(s.lattice.matrix * 1.02), s.species, s.frac_coords) for s in inputs]
        return [RelaxResult(r, {"e_above_hull": 0.05 * k}, "", 0.3, 0.0) for k, r in enumerate(out)], [""] * len(out)

    scorer._relax = fake_relax
    cfg = RLConfig(prior=str(prior), batch_size=4, sample_steps=None, validity="none", threads=1, recheck_n=0,
                   relax="none")  # fmt: skip
    optimize(LIGHT, "prior", 4, 0, tmp_path / "run", cfg, scorer=scorer, progress=False)
    df = read_memory(tmp_path / "run")
    df = df[df["valid"] == 1].reset_index(drop=True)  # the scored ones
    assert len(df) == 4 and df["relaxed_cif"].notna().all()
    for _, row in df.iterrows():
        gen = Crystal.from_cif(row["cif"]).to_structure()
        rel = Structure.from_str(row["relaxed_cif"], fmt="cif")
        assert rel.volume == pytest.approx(gen.volume * 1.02**3, rel=1e-4)
    np.testing.assert_allclose(df["relax_e_hull"], 0.05 * df.groupby("iteration").cumcount())  # position in batch
    assert (df["relax_energy_drop"] == 0.3).all() and (df["relax_rmsd"] == 0.0).all()
    assert (df["hit"][df["relax_e_hull"] > 0.1] == 0).all()  # stability: no hit above 0.1 eV/atom


def test_an_older_memory_gets_the_relaxation_columns_as_null(tmp_path):
    path = tmp_path / "memory.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE crystals (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, method TEXT, iteration INTEGER, "
        "idx INTEGER, formula TEXT, cif TEXT, valid INTEGER, failed INTEGER, density REAL, reward REAL, "
        "filtered_reward REAL, hit INTEGER, created REAL, UNIQUE(run_id, iteration, idx))"
    )
    conn.execute("INSERT INTO crystals (run_id, formula, valid, hit) VALUES ('r', 'MgO', 1, 0)")
    conn.commit()
    conn.close()
    Memory(path, ["density"]).close()
    df = read_memory(tmp_path)
    assert {"relaxed_cif", "relax_e_hull", "relax_energy_drop", "relax_rmsd"} <= set(df.columns)
    assert df["relax_e_hull"].isna().all() and df["formula"].tolist() == ["MgO"]


# ------------------------------------------------------------------------- defaults and resume


def test_defaults_relax_with_the_mlip_extra_and_put_stability_in_the_hit():
    cfg = resolve(RLConfig())
    assert cfg.relax == ("mlip" if mlip_available() else None)
    assert cfg.stability == ("hull" if mlip_available() else "none")
    assert cfg.relax_engine == "batched"
    raw = resolve(RLConfig(relax="none"))
    assert raw.relax is None and raw.stability == "none"
    with pytest.raises(ConfigError, match="'stability'"):
        validate(RLConfig(relax="none", stability="hull"))
    with pytest.raises(ConfigError, match="'relax'"):
        validate(RLConfig(relax="dft"))
    relax, target = resolve_pipeline("none", "auto")
    assert relax is None and target is None
    with pytest.raises(ValueError, match="needs relax"):
        resolve_pipeline("none", "hull")


def test_a_resumed_run_keeps_its_own_settings_where_today_s_defaults_differ():
    started = {"relax": None, "relax_engine": "ase", "batch_size": 32, "lr": 0.0005}  # an older run's run.json
    cfg = adopt_started(RLConfig(), started)
    assert cfg.relax is None and cfg.relax_engine == "ase"
    assert resolve(cfg).stability == "none"  # the older run had no stability key: none, as it ran
    explicit = adopt_started(RLConfig(lr=1e-3), started)
    assert explicit.lr == 1e-3  # a value the user set stays (the resume check then names the difference)
