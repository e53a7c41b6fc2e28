"""CLI polish: ``--version``, defaults in every ``--help``, ``sample`` refusing a non-empty ``--out``, and the
command oracle reading the last number its program prints."""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import matinvent as mi
from matinvent.cli.parser import build_parser, main
from matinvent.oracles import CommandOracle
from matinvent.oracles.command import last_number

# ----------------------------------------------------------------------------------- --version, --help


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"matinvent {mi.__version__}"


@pytest.mark.skipif(shutil.which("matinvent") is None, reason="the console script is not on PATH")
def test_the_console_script_reports_the_same_version():
    out = subprocess.run(["matinvent", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"matinvent {mi.__version__}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_help_shows_each_options_default(command):
    parser = _subcommands()[command]
    text = "".join(parser.format_help().split())  # unwrapped (argparse may also wrap after a hyphen)
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default is None or default is False or default is argparse.SUPPRESS:
            continue
        help_text = " ".join(parser._get_formatter()._expand_help(action).split())
        assert str(default) in help_text, f"{command} {action.option_strings[0]}: default {default!r} not in help"
        assert "".join(help_text.split()) in text
    assert "(default:False)" not in text and "(default:None)" not in text


def test_the_top_level_help_lists_version_and_export():
    from matinvent.cli.parser import EXPORT_FORMATS
    from matinvent.io.export import FORMATS

    text = build_parser().format_help()
    assert "--version" in text and "export" in text
    assert EXPORT_FORMATS == FORMATS


# ----------------------------------------------------------------------------------- sample --out


def test_sample_refuses_a_non_empty_out_before_loading_anything(tmp_path, capsys):
    out = tmp_path / "samples"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    # the checkpoint does not exist: the refusal comes first
    code = main(["sample", "--n", "2", "--out", str(out), "--checkpoint", str(tmp_path / "no-ckpt")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--out {out} is not empty" in err and "notes.txt" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_sample_writes_into_an_empty_folder_and_with_overwrite_into_a_used_one(tmp_path, tiny_checkpoint):
    out = tmp_path / "samples"
    out.mkdir()
    args = ["sample", "--n", "2", "--steps", "2", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 2  # now it holds the first run's files
    (out / "notes.txt").write_text("keep me")
    assert main([*args, "--overwrite"]) == 0
    assert (out / "samples.json").exists() and (out / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------------- the command oracle's number


@pytest.mark.parametrize(
    ("stdout", "value"),
    [
        ("12", 12.0),
        ("starting\nconverged after 31 steps\n-1.5e3\n", -1500.0),
        ("band gap = 1.23 eV\n", 1.23),
        ("gap: 2.5 eV (converged)", 2.5),
        ("E=-3.2", -3.2),
        ('{"gap": 1.5, "unit": "eV"}', 1.5),
        ("[1.0, 2.0]", 2.0),
        ("the value is 3.2.", 3.2),
        ("H2O 1.5 Li2O", 1.5),  # formulas are not numbers
        ("3.", 3.0),
        ("+.5E-1", 0.05),
        ("result 1.5 info", 1.5),  # 'info' is not 'inf'
    ],
)
def test_last_number_reads_the_last_ascii_number_printed(stdout, value):
    assert last_number(stdout) == value


@pytest.mark.parametrize(
    "stdout",
    [
        "step 1\nresult 1_000",  # an underscore number: NaN, not the earlier 1
        "step 1\nresult ١٢٣",  # Arabic-Indic digits
        "step 1\nresult １２",  # full-width digits
        "step 1\n1,5",  # decimal comma
        "step 1\n0x10",
        "step 1\n1.5eV",  # unit glued to the number
        "step 1\nnan",
        "step 1\n-Infinity",
        "step 1\n1e999",  # overflows to inf
        "not a number",
        "",
    ],
)
def test_last_number_refuses_a_malformed_final_value(stdout):
    assert last_number(stdout) is None


def test_the_command_oracle_reads_the_number_from_a_log(tmp_path, si_diamond):
    script = tmp_path / "oracle.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            text = open(sys.argv[1]).read()
            print("reading", sys.argv[1])
            print("step 1 of 2")
            print("1_000" if "bad" in sys.argv[2] else "band gap = 1.25 eV")
            """
        )
    )
    good = CommandOracle("gap", [sys.executable, str(script), "{input}", "good"], timeout=60)
    bad = CommandOracle("gap", [sys.executable, str(script), "{input}", "bad"], timeout=60)
    assert good([si_diamond])[0] == 1.25
    assert math.isnan(bad([si_diamond])[0])
    assert np.isnan(bad([si_diamond, None])).all()
