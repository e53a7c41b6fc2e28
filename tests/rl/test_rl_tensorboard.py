"""optimize --tensorboard: each metrics.csv row also lands in TensorBoard (real event files when tensorboard is
installed), and a clear error before anything runs when it is not."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
from rl_toy import TASK, LightFraction, save_tiny_prior

from matinvent.config_io import ConfigError
from matinvent.rl import RLConfig, optimize
from matinvent.rl.tensorboard import TensorBoardLogger
from matinvent.scoring.scorer import Scorer


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior"))


def _config(prior) -> RLConfig:
    return RLConfig(prior=str(prior), batch_size=6, validity="none", kl_steps=1, threads=1, replay_per_iter=2)


def _run(prior, out, tb):
    scorer = Scorer(TASK, oracles={"light": LightFraction()})
    return optimize(TASK, "reinforce", 12, 0, out, _config(prior), scorer=scorer, progress=False, tensorboard=tb)


def test_without_tensorboard_the_run_refuses_to_start(tiny_prior, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    with pytest.raises(
        ConfigError, match=r"--tensorboard .*tb: TensorBoard is not installed \(pip install tensorboard"
    ):
        _run(tiny_prior, tmp_path / "run", tmp_path / "tb")
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


def test_rows_logged_at_evaluation_steps(tmp_path, monkeypatch):
    """The logger's scalars, checked on a recording writer (numbers, steps, skipped NaN)."""
    logged: list[tuple[str, float, int]] = []

    class Recorder:
        def __init__(self, log_dir: str) -> None:
            self.log_dir = log_dir

        def add_scalar(self, tag: str, value: float, global_step: int) -> None:
            logged.append((tag, value, global_step))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            logged.append(("closed", 0.0, 0))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Recorder))
    tb = TensorBoardLogger(tmp_path)
    tb.log({"iteration": 0, "evaluations": 6, "reward_mean": 0.5, "kl": float("nan"), "burden": None, "hits": 2})
    tb.close()
    assert logged == [
        ("matinvent/iteration", 0.0, 6),
        ("matinvent/reward_mean", 0.5, 6),
        ("matinvent/hits", 2.0, 6),
        ("closed", 0.0, 0),
    ]


def test_real_event_files_match_metrics_csv(tiny_prior, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, tb = tmp_path / "run", tmp_path / "tb"
    _run(tiny_prior, out, tb)
    metrics = pd.read_csv(out / "metrics.csv")
    events = EventAccumulator(str(tb))
    events.Reload()
    reward = events.Scalars("matinvent/reward_mean")
    assert [e.step for e in reward] == metrics["evaluations"].tolist()
    assert [e.value for e in reward] == pytest.approx(metrics["reward_mean"].tolist(), rel=1e-6)
    assert [e.value for e in events.Scalars("matinvent/hits")] == metrics["hits"].tolist()
