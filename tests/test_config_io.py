"""The config/task layer is torch-free: validating a task or an RL config never imports the model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from matinvent.config_io import Bounds, ConfigError, as_number


def test_loading_tasks_and_rl_configs_imports_neither_torch_nor_the_model():
    code = textwrap.dedent(
        """
        import sys
        from matinvent.scoring.tasks import load_task
        from matinvent.rl.config import load_rl_config
        task = load_task("T1")
        cfg = load_rl_config(None)
        heavy = sorted(m for m in sys.modules if m in ("torch", "matinvent.prior.model", "matinvent.prior.denoiser"))
        print(len(task.properties), cfg.batch_size, heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    n_props, batch, heavy = out.stdout.split(maxsplit=2)
    assert int(n_props) >= 2 and int(batch) > 0
    assert heavy.strip() == "[]"


def test_the_pretrain_config_module_re_exports_the_generic_names():
    import matinvent.prior.pretrain_config as config

    assert config.ConfigError is ConfigError and config.Bounds is Bounds


@pytest.mark.parametrize("text, value", [("1e3", 1000.0), ("12", 12), ("-0.5", -0.5)])
def test_one_number_syntax(text, value):
    assert as_number(text) == value


@pytest.mark.parametrize("text", ["1_000", "0x10", "١٢٣", "１２", "nan"])
def test_non_numbers_are_not_numbers(text):
    assert as_number(text) is None


def test_bounds_name_the_key():
    with pytest.raises(ConfigError, match="config key 'lr' must be a finite number"):
        Bounds(0, 10, low_open=True).check("lr", float("inf"))


def test_default_threads_is_half_the_usable_cpus(monkeypatch):
    import os

    from matinvent.config_io import default_threads

    for cores, expected in ((1, 1), (2, 1), (3, 1), (16, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        assert default_threads() == expected
