"""Configs and task files: finite numbers within documented bounds, one number syntax, clean errors."""

from __future__ import annotations

import dataclasses
import re

import pytest

from matinvent.cli import main
from matinvent.config_io import ConfigError, as_number
from matinvent.oracles import CommandOracle
from matinvent.prior.pretrain_config import PRETRAIN_BOUNDS, load_pretrain_config
from matinvent.rl import load_rl_config
from matinvent.rl.config import BOUNDS, RLConfig, rl_config_from_dict
from matinvent.scoring.tasks import RESERVED, load_task, task_from_dict

INT_KEYS = {f.name for f in dataclasses.fields(RLConfig) if f.type in ("int", "int | None")}


def outside(bounds, integer):
    """One value just below and one just above ``bounds``."""
    step = 1 if integer else 1e-9 * max(1.0, abs(bounds.high))
    low = bounds.low if bounds.low_open else bounds.low - step
    high = bounds.high if bounds.high_open else bounds.high + step
    return [int(low), int(high)] if integer else [low, high]


def write(tmp_path, text, name="file.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- RL config -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value",
    [(k, v) for k, b in BOUNDS.items() for v in outside(b, k in INT_KEYS)],
    ids=lambda x: str(x),
)
def test_every_rl_bound_rejects_the_value_beyond_it_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
        rl_config_from_dict({key: value, **({"df_buff": 10**6} if key == "df_tol" else {})})


@pytest.mark.parametrize("key", list(BOUNDS))
def test_every_rl_bound_accepts_its_closed_ends(key):
    b = BOUNDS[key]
    ends = [v for v, open_ in ((b.low, b.low_open), (b.high, b.high_open)) if not open_]
    for v in ends:
        data = {key: int(v) if key in INT_KEYS else v}
        if key == "df_tol":
            data["df_buff"] = int(v) + 1
        if key == "df_buff" and v <= RLConfig().df_tol:
            data["df_tol"] = 0
        if key == "workers":  # worker processes need an executor that has them
            data["executor"] = "dask"
        assert getattr(rl_config_from_dict(data), key) == v


@pytest.mark.parametrize(
    "text, message",
    [
        ("alpha: .nan", "'alpha' must be a finite number"),
        ("beta: .nan", "'beta' must be a finite number"),
        ("wd_prior_weight: .nan", "'wd_prior_weight' must be a finite number"),
        ("lr: .inf", "'lr' must be a finite number"),
        ("grad_clip: .inf", "'grad_clip' must be a finite number"),
        ("lam: .inf", "'lam' must be a finite number"),
        ("lam: -.inf", "'lam' must be a finite number"),
        ("batch_size: 1e30", "'batch_size' must be in [1, 4096]"),
        ("batch_size: 1000000000000000000000000000000", "'batch_size' must be in [1, 4096]"),
        ("epochs: 100000", "'epochs' must be in [1, 1000]"),
        ("lr: 1.5", "'lr' must be in (0, 1]"),
        ("lam: 0.5", "'lam' must be > 1"),
        ("lam: 1", "'lam' must be > 1"),  # λ must exceed the maximum reward
        ("grad_clip: 0", "'grad_clip' must be > 0"),
        ("grad_clip: -1", "'grad_clip' must be > 0"),
        ("kl_weights: {F: 5000}", "'kl_weights.F' must be <= 1000"),
        ("batch_size: 2.5", "'batch_size' must be an integer"),
        ("batch_size: 1_000", "'batch_size' must be an integer, got '1_000'"),
        ("lr: 0x10", "'lr' must be a number, got '0x10'"),
    ],
)
def test_rl_config_file_rejects_bad_numbers_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_rl_config(write(tmp_path, text + "\n"))
    assert str(tmp_path) in str(info.value)  # and the file


def test_scientific_integers_and_floats_load_in_configs(tmp_path):
    cfg = load_rl_config(write(tmp_path, "batch_size: 1e3\nlr: 1e-3\nlam: 1.5E0\ndiversity_budget: 3.0e+3\n"))
    assert (cfg.batch_size, cfg.lr, cfg.lam, cfg.diversity_budget) == (1000, 1e-3, 1.5, 3000)
    assert isinstance(cfg.batch_size, int) and isinstance(cfg.diversity_budget, int)


def test_leading_zeros_are_decimal_not_octal(tmp_path):
    assert load_rl_config(write(tmp_path, "batch_size: 017\n")).batch_size == 17  # YAML 1.1 would read 15


# --- pretraining config ------------------------------------------------------------------------------
PRETRAIN_INT = {
    "model.hidden", "model.layers", "model.n_freq", "model.time_dim", "model.n_types", "diffusion.timesteps",
    "diffusion.max_atoms", "diffusion.sample_steps", "data.val_size", "data.max_atoms", "train.batch_size",
    "train.warmup_steps", "train.max_steps", "train.val_every", "train.ckpt_every", "train.seed", "train.threads",
}  # fmt: skip


@pytest.mark.parametrize(
    "key, value",
    [(k, v) for k, b in PRETRAIN_BOUNDS.items() for v in outside(b, k in PRETRAIN_INT)],
    ids=lambda x: str(x),
)
def test_every_pretrain_bound_rejects_the_value_beyond_it_naming_the_key(tmp_path, key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_pretrain_config(write(tmp_path, f"{section}:\n  {name}: {value!r}\n"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  lr: .nan\n", "'train.lr' must be a finite number"),
        ("train:\n  grad_clip: -1\n", "'train.grad_clip' must be > 0"),
        ("train:\n  warmup_steps: -10\n", "'train.warmup_steps' must be >= 0"),
        ("train:\n  lr: 1.0e-4\n  lr_min: 1.0e-3\n", "'train.lr_min' (0.001) must be <= 'train.lr' (0.0001)"),
        ("diffusion:\n  cost_type: .inf\n", "'diffusion.cost_type' must be a finite number"),
        ("train:\n  max_steps: 1e12\n", "'train.max_steps' must be in"),
    ],
)
def test_pretrain_config_rejects_the_reported_values(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_pretrain_config(write(tmp_path, text))


def test_pretrain_lr_min_equal_to_lr_and_zero_warmup_load(tmp_path):
    cfg = load_pretrain_config(write(tmp_path, "train:\n  lr: 1e-3\n  lr_min: 1e-3\n  warmup_steps: 0\n"))
    assert (cfg.train.lr, cfg.train.lr_min, cfg.train.warmup_steps) == (1e-3, 1e-3, 0)


# --- one number syntax -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, number",
    [(3, 3), (2.5, 2.5), ("1e3", 1000.0), ("-2.5E-4", -2.5e-4), (".5", 0.5), ("7.", 7.0), ("12", 12)],
)
def test_as_number_accepts_ascii_decimal_and_scientific(value, number):
    assert as_number(value) == number and type(as_number(value)) is type(number)


@pytest.mark.parametrize("value", ["1_000", "0x10", "١٢٣", "１２", "inf", "nan", " 1", "1e", "", True, None, [1]])
def test_as_number_rejects_everything_else(value):
    assert as_number(value) is None


TASK = "name: t\nproperties:\n  density: {{target: below, threshold: {value}}}\n"


def test_1e3_is_the_same_number_in_task_files_and_configs(tmp_path):
    task = load_task(write(tmp_path, TASK.format(value="1e3")))
    cfg = load_rl_config(write(tmp_path, "diversity_budget: 1e3\n", "cfg.yaml"))
    assert task.targets[0].threshold == 1000.0 == cfg.diversity_budget
    as_text = task_from_dict({"name": "t", "properties": {"density": {"target": "below", "threshold": "1e3"}}})
    assert as_text.targets[0].threshold == 1000.0


@pytest.mark.parametrize("value", ["1_000", "0x10", ".nan", ".inf"])
def test_non_numbers_are_rejected_alike_in_task_files(tmp_path, value):
    with pytest.raises(ConfigError, match="'properties.density.threshold' must be a"):
        load_task(write(tmp_path, TASK.format(value=value)))


# --- task files: reserved names, command arguments, encodings -----------------------------------------
@pytest.mark.parametrize("name", RESERVED)
def test_reserved_property_names_are_rejected(tmp_path, name):
    with pytest.raises(ConfigError, match=f"'properties.{name}': '{name}' is a reserved column name"):
        task_from_dict({"name": "t", "properties": {name: {"target": "below", "threshold": 1}}}, "t.yaml")


@pytest.mark.parametrize("name", ["band-gap", "1gap", "gap gap"])
def test_property_names_must_be_identifiers(name):
    with pytest.raises(ConfigError, match=f"'properties.{name}': a property name must be"):
        task_from_dict({"name": "t", "properties": {name: {"target": "below", "threshold": 1}}})


def _command_task(command) -> dict:
    return {
        "name": "t",
        "properties": {"e": {"target": "below", "threshold": 1}},
        "oracles": {"e": {"command": command}},
    }


def test_numeric_command_arguments_become_text():
    task = task_from_dict(_command_task(["python", "calc.py", 3, 0.5, "{input}"]))
    oracle = task.build_oracles()["e"]
    assert oracle.argv == ["python", "calc.py", "3", "0.5", "{input}"]
    assert CommandOracle("e", ["calc", 7, "{input}"]).argv == ["calc", "7", "{input}"]  # the Python API too


@pytest.mark.parametrize(
    "command, message",
    [
        (["calc", True, "{input}"], "command argument 1 must be a string or a number, got True"),
        (["calc", None, "{input}"], "command argument 1 must be a string or a number, got None"),
        (["calc", {"a": 1}, "{input}"], "command argument 1 must be a string or a number"),
        ("calc '{input}", "the command cannot be split into arguments: No closing quotation"),
    ],
)
def test_bad_command_arguments_are_rejected_naming_the_key(command, message):
    with pytest.raises(ConfigError, match=re.escape(f"'oracles.e.command': {message}")):
        task_from_dict(_command_task(command))


@pytest.mark.parametrize("key, value", [("unit", 3), ("description", ["x"]), ("timeout", 1e9)])
def test_command_oracle_settings_are_checked(key, value):
    data = _command_task(["calc", "{input}"])
    data["oracles"]["e"][key] = value
    with pytest.raises(ConfigError, match=f"'oracles.e.{key}' must be"):
        task_from_dict(data)


def test_non_utf8_task_and_config_files_are_reported_as_such(tmp_path):
    bad = "name: t\ndescription: caf\xe9\nproperties:\n  density: {target: below, threshold: 1}\n".encode("latin-1")
    (tmp_path / "task.yaml").write_bytes(bad)
    offset = bad.index(0xE9)
    where = f"not UTF-8 text (byte 0xe9 at offset {offset})"
    with pytest.raises(ConfigError, match=r"task file .*task\.yaml: " + re.escape(where)):
        load_task(tmp_path / "task.yaml")
    (tmp_path / "cfg.yaml").write_bytes(b"# r\xe9glages\nbatch_size: 8\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: not UTF-8 text"):
        load_rl_config(tmp_path / "cfg.yaml")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: not UTF-8 text"):
        load_pretrain_config(tmp_path / "cfg.yaml")


# --- the command line: one line per error, before any run ---------------------------------------------
def test_cli_reports_a_bad_config_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["optimize", "--task", "density", "--budget", "6", "--out", str(out), "--config"]
    assert main([*args, str(write(tmp_path, "lam: 0.5\n"))]) == 2
    assert "'lam' must be > 1, got 0.5" in capsys.readouterr().err
    assert main([*args, str(write(tmp_path, "lr: [1, 2\n", "broken.yaml"))]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml: not valid YAML" in err and err.count("\n") == 1
    assert main([*args, str(write(tmp_path, "lam: 2\n", "ok.yaml")), "--threads", "-3"]) == 2
    assert "'threads' must be >= 0, got -3" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("seed, budget", [(-5, 6), (2**32, 6), (0, 0), (0, 10**10)])
def test_optimize_rejects_seed_and_budget_out_of_range(tmp_path, capsys, seed, budget):
    args = ["optimize", "--task", "density", "--budget", str(budget), "--seed", str(seed), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert ("seed" if budget == 6 else "budget") + " must be an integer in" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_defaults_are_within_the_bounds():
    assert rl_config_from_dict({}) == RLConfig()
    assert load_pretrain_config(None) == load_pretrain_config(None)
