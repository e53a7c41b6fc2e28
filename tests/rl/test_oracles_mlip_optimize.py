"""``optimize --relax mlip`` / config ``relax: mlip``: every property on the relaxed structure, one relaxation each."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from rl_toy import save_tiny_prior

from matinvent.cli.parser import build_parser, main
from matinvent.config_io import ConfigError
from matinvent.io.run_memory import read_memory
from matinvent.rl.config import RLConfig, rl_config_from_dict, validate
from matinvent.scoring import scorer as scoring

needs_sevenn = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra (sevenn)")

TASK = """name: dense_stable
properties:
  density: {target: range, center: 5.0, tolerance: 1.0, ramp: 5.0}
  e_above_hull: {target: below, threshold: 0.1, ramp: 0.5}
"""
CONFIG = """batch_size: 4
sample_steps: null
validity: none
kl_steps: 2
threads: 1
replay_per_iter: 2
recheck_n: 0
relax_max_steps: 3
"""


def test_relax_config_key_is_validated_and_named():
    assert RLConfig().relax == "auto" and rl_config_from_dict({"relax": "mlip"}).relax == "mlip"
    with pytest.raises(ConfigError, match="config key 'relax' must be auto, mlip, none or null, got 'dft'"):
        rl_config_from_dict({"relax": "dft"})
    with pytest.raises(ConfigError, match="config key 'relax' must be a string"):
        rl_config_from_dict({"relax": 3})
    with pytest.raises(ConfigError, match="relax_max_steps"):
        validate(RLConfig(relax="mlip", relax_max_steps=0))


def test_optimize_cli_has_relax_flag():
    args = build_parser().parse_args(["optimize", "--task", "x", "--budget", "1", "--out", "o", "--relax", "mlip"])
    assert args.relax == "mlip"
    assert build_parser().parse_args(["optimize", "--task", "x", "--budget", "1", "--out", "o"]).relax is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["optimize", "--task", "x", "--budget", "1", "--out", "o", "--relax", "dft"])


@needs_sevenn
def test_optimize_relax_mlip_scores_relaxed_structures_once_each(tmp_path, monkeypatch):
    built: list[scoring.Scorer] = []

    class RecordingScorer(scoring.Scorer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls: list[tuple[list, scoring.Scores]] = []
            built.append(self)

        def __call__(self, structures, validity=None):
            scores = super().__call__(structures, validity)
            self.calls.append((list(structures), scores))
            return scores

    monkeypatch.setattr("matinvent.rl.loop.Scorer", RecordingScorer)
    prior = save_tiny_prior(tmp_path / "prior")
    (tmp_path / "task.yaml").write_text(TASK)
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    out = tmp_path / "run"
    argv = ["optimize", "--task", str(tmp_path / "task.yaml"), "--method", "matinvent", "--budget", "4"]
    argv += ["--out", str(out), "--config", str(tmp_path / "cfg.yaml"), "--prior", str(prior), "--relax", "mlip"]
    assert main(argv) == 0
    (scorer,) = built
    assert scorer.relax == "mlip" and scorer.relaxer.max_steps == 3
    assert scorer.on_input == {"e_above_hull"}  # from the relaxation; density on the relaxed cell
    df = read_memory(out)
    assert {"density", "e_above_hull"} <= set(df)
    assert scorer.relaxer.n_relaxations == int(df["valid"].sum()) == 4  # one relaxation per crystal, both properties
    assert json.loads((out / "run.json").read_text())["config"]["relax"] == "mlip"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["evaluations"] == 4 and summary["iterations"] == df["iteration"].nunique()
    for structures, scores in scorer.calls:  # density is the relaxed cell's: the relaxer's cached relaxation
        for s, density in zip(structures, scores.values["density"], strict=True):
            r = scorer.relaxer.relaxed(s)
            assert density == pytest.approx(r.structure.density, rel=1e-12) if r.ok else math.isnan(density)
    assert sum(len(structures) for structures, _ in scorer.calls) == 4 == scorer.relaxer.n_relaxations  # no new ones
    assert any(scorer.relaxer.relaxed(s).ok for structures, _ in scorer.calls for s in structures)
