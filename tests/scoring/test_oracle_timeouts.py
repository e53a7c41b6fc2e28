"""Bounded oracle calls: hangs, crashes and errors in a worker cost one structure, never the run;
the command oracle kills its whole process group and reads only ASCII numbers."""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from timeout_oracles import MisbehavingOracle, TorchThreads, broken_factory

from matinvent.cli import main
from matinvent.oracles import CommandOracle, OracleError
from matinvent.oracles.command import parse_number
from matinvent.scoring.executor import OracleSpec
from matinvent.scoring.local_executor import LocalExecutor
from matinvent.scoring.rewards import Target
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import Task, load_task

HANG_GUARD_S = 30.0  # a hang guard, not a speed assertion


def rock_salt(a: float, cation: str = "Na", anion: str = "Cl") -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture()
def structures() -> list[Structure]:
    """Three structures; the middle one holds the toy oracle's trigger element (Kr)."""
    cscl = Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return [rock_salt(5.6), rock_salt(5.0, "Kr", "Cl"), cscl]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def toy_spec(mode: str, pid_file: str | None = None) -> OracleSpec:
    return OracleSpec("toy", {"mode": mode, "pid_file": pid_file}, factory=MisbehavingOracle)


def test_a_hang_that_ignores_signals_costs_only_its_structure(structures, tmp_path):
    pid_file = tmp_path / "pid"
    start = time.monotonic()
    with LocalExecutor(timeout_s=2) as ex:
        values, reasons = ex.evaluate(toy_spec("busy", str(pid_file)), structures)
        assert time.monotonic() - start < HANG_GUARD_S
        assert values[0] == 8 and values[2] == 2 and math.isnan(values[1])
        assert reasons[0] == reasons[2] == "" and "timed out after 2 s" in reasons[1]
        hung = int(pid_file.read_text())
        assert process_gone(hung) and hung not in ex.pids  # killed and reaped, not left spinning
        again, _ = ex.evaluate(toy_spec("busy"), structures[:1])  # a fresh worker serves the next call
        assert again[0] == 8


def test_two_workers_keep_scoring_while_one_hangs(structures):
    batch = [structures[1], structures[0], structures[2], structures[0], structures[2]]
    with LocalExecutor(timeout_s=2, workers=2) as ex:
        values, reasons = ex.evaluate(toy_spec("sleep"), batch)
        assert len(ex.pids) <= 2
    assert math.isnan(values[0]) and list(values[1:]) == [8, 2, 8, 2]
    assert "timed out" in reasons[0] and reasons[1:] == [""] * 4


def test_a_crashing_worker_costs_only_its_structure(structures):
    with LocalExecutor(timeout_s=20) as ex:
        values, reasons = ex.evaluate(toy_spec("crash"), [structures[1], structures[0], structures[2]])
    assert math.isnan(values[0]) and list(values[1:]) == [8, 2]
    assert "worker died with exit code 1" in reasons[0] and reasons[1:] == ["", ""]


def test_an_oracle_error_keeps_the_worker_and_names_the_error(structures):
    with LocalExecutor(timeout_s=20) as ex:
        values, reasons = ex.evaluate(toy_spec("raise"), [*structures, None])
        pids = ex.pids
        ex.evaluate(toy_spec("raise"), structures[:1])
        assert ex.pids == pids  # the oracle was built once and the worker kept
    assert list(values[[0, 2]]) == [8, 2] and np.isnan(values[[1, 3]]).all()
    assert "ValueError: toy oracle refuses this structure" in reasons[1] and reasons[3] == "no structure"


def test_a_worker_killed_between_calls_is_replaced_without_losing_a_structure(structures):
    with LocalExecutor(timeout_s=20) as ex:
        ex.evaluate(toy_spec("raise"), structures[:1])
        (pid,) = ex.pids
        psutil = pytest.importorskip("psutil")
        worker = psutil.Process(pid)
        os.kill(pid, signal.SIGKILL)
        psutil.wait_procs([worker], timeout=10)
        values, reasons = ex.evaluate(toy_spec("raise"), [structures[0], structures[2]])
        assert list(values) == [8, 2] and reasons == ["", ""] and ex.pids != [pid]


def test_an_oracle_that_cannot_be_built_raises_oracle_error(structures):
    with LocalExecutor(timeout_s=20) as ex, pytest.raises(OracleError, match="no weights here"):
        ex.evaluate(OracleSpec("broken", factory=broken_factory), structures)


def test_executor_results_equal_in_process_results(structures):
    task = load_task("density")
    in_process = Scorer(task, validity="none")(structures)
    bounded = Scorer(task, validity="none", timeout_s=20)
    try:
        got = bounded(structures)
    finally:
        bounded.close()
    np.testing.assert_array_equal(got.values["density"], in_process.values["density"])
    np.testing.assert_array_equal(got.reward, in_process.reward)
    np.testing.assert_array_equal(got.hit, in_process.hit)
    assert set(bounded.specs) == {"density"}


def test_scorer_with_timeout_gives_the_hung_structure_nan_reward_0_and_a_reason(structures):
    task = Task("toy", (Target(prop="toy", kind="above", threshold=1.0),))
    scorer = Scorer(task, oracles={"toy": toy_spec("sleep")}, validity="none", timeout_s=2)
    try:
        scores = scorer(structures)
    finally:
        scorer.close()
    assert list(scores.reward) == [1.0, 0.0, 1.0] and list(scores.failed) == [False, True, False]
    assert scores.reason[0] == "" and "oracle 'toy': timed out after 2 s" in scores.reason[1]


def test_scorer_without_timeout_builds_specs_in_process(structures):
    task = Task("toy", (Target(prop="toy", kind="above", threshold=1.0),))
    scorer = Scorer(task, oracles={"toy": toy_spec("raise")}, validity="none")
    assert scorer.executor is None and scorer.specs == {}
    assert list(scorer(structures).failed) == [False, True, False]  # the in-process oracle's own NaN
    with pytest.raises(ValueError, match="timeout_s"):
        Scorer(task, oracles={"toy": toy_spec("raise")}, timeout_s=float("nan"))


def test_score_cli_oracle_timeout(tmp_path, structures):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for i, s in enumerate(structures[::2]):
        s.to(filename=str(folder / f"{i}.cif"))
    plain, bounded = tmp_path / "plain.csv", tmp_path / "bounded.csv"
    assert main(["score", "--relax", "none", str(folder), "--task", "density", "--out", str(plain)]) == 0
    assert (
        main(
            [
                "score",
                "--relax",
                "none",
                str(folder),
                "--task",
                "density",
                "--out",
                str(bounded),
                "--oracle-timeout",
                "20",
            ]
        )
        == 0
    )
    pd.testing.assert_frame_equal(pd.read_csv(plain), pd.read_csv(bounded))
    assert main(["score", "--relax", "none", str(folder), "--task", "density", "--oracle-timeout", "0"]) == 2


# --- the command oracle ----------------------------------------------------------------------------


def group_survivors(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    psutil = pytest.importorskip("psutil")
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def test_a_timed_out_command_leaves_no_process_of_its_group(tmp_path, structures):
    pgid_file, child_file = tmp_path / "pgid", tmp_path / "child"
    script = 'echo $$ > "$1"; sleep 1000 & echo $! > "$2"; sleep 1000'  # a grandchild in the background, a hang
    argv = ["sh", "-c", script, "sh", str(pgid_file), str(child_file), "{input}"]
    oracle = CommandOracle("slow", argv, timeout=1)
    start = time.monotonic()
    assert math.isnan(oracle(structures[:1])[0])
    assert time.monotonic() - start < HANG_GUARD_S
    pgid, grandchild = int(pgid_file.read_text()), int(child_file.read_text())
    assert pgid != os.getpgid(0)  # the command ran in its own session
    assert group_survivors(pgid) == []
    psutil = pytest.importorskip("psutil")
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("text", ["1_000", "١٢٣", "１２", "0x10", "nan", "inf", "-Infinity", "1e999", "1,5", "", "e3"])
def test_parse_number_rejects_non_ascii_and_non_decimal(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(("text", "value"), [("12", 12.0), ("-1.5e3", -1500.0), ("3.", 3.0), (" +.5E-1 ", 0.05)])
def test_parse_number_accepts_ascii_decimal_and_scientific(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(("printed", "expected"), [("-1.5e3", -1500.0), ("1_000", math.nan), ("１２", math.nan)])
def test_command_oracle_reads_only_ascii_numbers(structures, printed, expected):
    oracle = CommandOracle("echo", ["sh", "-c", f"echo log line; echo '{printed}'", "sh", "{input}"], timeout=20)
    value = oracle(structures[:1])[0]
    assert value == expected or (math.isnan(expected) and math.isnan(value))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_optimize_config_rejects_a_non_positive_oracle_timeout(bad):
    from matinvent.config_io import ConfigError
    from matinvent.rl.config import rl_config_from_dict

    with pytest.raises(ConfigError, match="oracle_timeout_s"):
        rl_config_from_dict({"oracle_timeout_s": bad})
    assert rl_config_from_dict({"oracle_timeout_s": 30}).oracle_timeout_s == 30.0


def test_an_oracle_worker_runs_one_torch_thread():
    from matinvent.scoring.executor import OracleSpec
    from matinvent.scoring.local_executor import LocalExecutor

    executor = LocalExecutor(timeout_s=60)
    try:
        nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        values, reasons = executor.evaluate(OracleSpec("threads", factory=TorchThreads), [nacl])
    finally:
        executor.close()
    assert values[0] == 1.0, reasons
