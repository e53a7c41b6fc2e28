"""``matinvent score --relax mlip``: MLIP properties from one shared relaxation, others on relaxed cells."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matinvent.cli import main
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import task_from_dict

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra")


def mgo(a: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_relax_mlip_scores_relaxed_structures_once(tmp_path):
    task = task_from_dict(
        {
            "name": "ef_density",
            "properties": {
                "formation_energy": {"target": "below", "threshold": -2.5, "ramp": 2.5},
                "density": {"target": "range", "center": 3.6, "tolerance": 0.3, "ramp": 2.0},
            },
        }
    )
    scorer = Scorer(task, relax="mlip")
    scores = scorer([mgo(4.5), None])  # a strained cell (the relaxation must shrink it) and a failed one
    assert scores.values["formation_energy"][0] == pytest.approx(-3.05, abs=0.1)
    relaxed = scores.structures[0]
    assert relaxed.lattice.a < 4.5 * 0.97  # density is computed on the relaxed cell
    assert scores.values["density"][0] == pytest.approx(relaxed.density)
    assert scores.hit[0] and not scores.hit[1] and scores.failed[1]
    assert scorer.relaxer.n_relaxations == 1


def test_score_cli_with_relax_mlip(tmp_path):
    d = tmp_path / "cifs"
    d.mkdir()
    mgo(4.25).to(filename=str(d / "MgO.cif"))
    out = tmp_path / "scores.csv"
    assert main(["score", str(d), "--task", "formation_energy", "--relax", "mlip", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == [
        "id", "formula", "formation_energy", "relax_e_hull", "relax_energy_drop", "relax_rmsd", "reward", "hit",
        "valid", "reason",
    ]  # fmt: skip
    assert abs(df["relax_e_hull"][0]) < 0.1 and df["relax_energy_drop"][0] > 0 and df["relax_rmsd"][0] < 0.05
    assert df["formation_energy"][0] == pytest.approx(-3.05, abs=0.1) and df["hit"][0] == 1
