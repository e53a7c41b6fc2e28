"""Issue 32: the stability reward (one batched single point of the crystal as generated) and the alignment run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from align_toy import align
from pymatgen.core import Lattice, Structure
from rl_toy import save_tiny_prior

from matinvent.cli import main
from matinvent.config_io import ConfigError
from matinvent.io.run_memory import read_memory
from matinvent.scoring.scorer import Scorer, settle_pipeline
from matinvent.scoring.tasks import load_task

pytest.importorskip("sevenn")
pytest.importorskip("torch_sim")

ROOT = Path(__file__).resolve().parents[2]
ALIGN = ROOT / "configs" / "align.yaml"


def rocksalt_mgo(scale: float = 1.0) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21 * scale), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])


def test_stability_reward_ranks_rocksalt_mgo_above_a_compressed_copy():
    from pymatgen.io.ase import AseAtomsAdaptor

    from matinvent.oracles.mlip.calculators import load_calculator

    scores = Scorer(load_task("stability"), validity="none")([rocksalt_mgo(), rocksalt_mgo(0.9)])
    e_hull = scores.values["static_e_above_hull"]
    assert scores.reward[0] == 1.0 and scores.hit[0]  # MgO lies on the hull
    assert scores.reward[1] < 0.7 and not scores.hit[1]
    # independent: the compressed copy costs what the per-structure ASE calculator says, per atom
    calc = load_calculator("sevennet-0")
    energies = []
    for s in (rocksalt_mgo(), rocksalt_mgo(0.9)):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy() / len(atoms))
    assert e_hull[1] - e_hull[0] == pytest.approx(energies[1] - energies[0], abs=1e-4)
    assert abs(e_hull[0]) < 0.05  # SevenNet-0's MgO within 50 meV/atom of MP's hull


def test_single_elements_get_no_reward_however_stable():
    copper = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.63), ["Cu"], [[0, 0, 0]])
    scores = Scorer(load_task("stability"), validity="none")([copper])
    assert scores.values["static_e_above_hull"][0] < 0.1  # on its own hull ...
    assert scores.reward[0] == 0.0 and not scores.hit[0]  # ... but the n_elements guard zeroes it


def test_the_stability_task_is_scored_as_generated_whatever_relax_auto_says():
    assert settle_pipeline("auto", "auto", load_task("stability")) == (None, "none")
    assert settle_pipeline("auto", "auto", load_task("density")) == ("mlip", "hull")
    assert settle_pipeline("mlip", "auto", load_task("stability")) == ("mlip", "hull")  # asked for: done


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")


@pytest.fixture(scope="module")
def full_alignment(tiny_prior, tmp_path_factory):
    out = tmp_path_factory.mktemp("align") / "run"
    return out, align(tiny_prior, out, 12, ALIGN)


def rows(out) -> pd.DataFrame:
    return read_memory(out).drop(columns=["id", "created", "run_id"])


def test_an_alignment_run_resumes_exactly_after_kill_9(tiny_prior, full_alignment, tmp_path):
    full_out, full_summary = full_alignment
    out = tmp_path / "run"
    script = Path(__file__).resolve().parents[1] / "align_toy.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_prior), str(out), "12", "0", str(ALIGN)], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILL right after iteration 0 was scored
    assert read_memory(out)["iteration"].max() == 0 and not (out / "summary.json").exists()
    summary = align(tiny_prior, out, 12, ALIGN, resume=True)
    pd.testing.assert_frame_equal(rows(full_out), rows(out))
    assert np.isfinite(rows(out)["static_e_above_hull"]).any()  # the single points did run
    for key in ("evaluations", "hits", "iterations"):
        assert summary[key] == full_summary[key], key


def test_the_aligned_agent_exports_as_a_prior_that_samples(full_alignment, tmp_path):
    from matinvent.prior.checkpoint import load_prior
    from matinvent.rl.prior_export import export_prior

    run, summary = full_alignment
    out = export_prior(run, tmp_path / "aligned")
    assert load_prior(out).config.sample_steps == 6  # the run's sampler steps (here the tiny prior's own)
    text = (out / "TRAINING.md").read_text()
    assert "matinvent optimize --task stability --method matinvent --budget 12 --seed 0" in text
    assert f"| evaluations | {summary['evaluations']} (budget 12) |" in text
    assert "rejected_pg: zero" in text  # the alignment's own settings are written down
    samples = tmp_path / "samples"
    assert main(["sample", "--n", "2", "--checkpoint", str(out), "--out", str(samples), "--threads", "1"]) == 0
    assert list(samples.rglob("*.cif"))  # the toy prior also draws degenerate crystals, written apart
    with pytest.raises(ConfigError, match="no agent/"):
        (run / "agent").rename(run / "agent_moved")
        try:
            export_prior(run, tmp_path / "again")
        finally:
            (run / "agent_moved").rename(run / "agent")
