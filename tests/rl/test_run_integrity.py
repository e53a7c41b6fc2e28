"""Run and prior folders: the lock on --out, corrupt files (exit 2 naming the file), --resume refusing a changed run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch
from rl_toy import LightFraction, save_tiny_prior
from safetensors.torch import load_file, save_file

from matinvent.cli import main
from matinvent.config_io import ConfigError
from matinvent.io.run_memory import read_memory
from matinvent.prior.checkpoint import load_prior
from matinvent.rl import RLConfig, optimize
from matinvent.rl.run_lock import LOCK_FILE, RunLock, RunLockedError
from matinvent.scoring.scorer import Scorer

TASK_YAML = "name: dense\nproperties:\n  density: {target: range, center: 11.0, tolerance: 0.5, ramp: 3.0}\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny prior, a task file, a config file and a finished 12-evaluation run made through the CLI."""
    root = tmp_path_factory.mktemp("integrity")
    prior = save_tiny_prior(root / "prior")
    (root / "task.yaml").write_text(TASK_YAML)
    cfg = f"prior: {prior}\nbatch_size: 6\nvalidity: none\nlr: 1.0e-3\nkl_steps: 2\nthreads: 1\nrecheck_n: 0\n"
    cfg += "relax: none\n"
    (root / "cfg.yaml").write_text(cfg)
    assert main(argv(root, root / "run", budget=12)) == 0
    return root


def argv(root, out, budget=12, *extra):
    return [
        "optimize", "--task", str(root / "task.yaml"), "--config", str(root / "cfg.yaml"), "--method", "matinvent",
        "--budget", str(budget), "--seed", "0", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture
def run_copy(setup, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(setup / "run", dst)
    return dst


def snapshot(run):
    """What a refused start must leave untouched."""
    rows = read_memory(run).drop(columns=["created"]) if (run / "memory.sqlite").exists() else None
    files = {n: (run / n).read_bytes() for n in ("run.json", "metrics.csv", "checkpoint.pt") if (run / n).exists()}
    return rows, files


def assert_refused(capsys, args, *needles):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line per error, no traceback
    for needle in needles:
        assert needle in err, err
    return err


# --- the lock on --out ---------------------------------------------------------------------------
def test_a_second_optimize_process_on_one_out_exits_2_at_once_and_duplicates_nothing(setup, run_copy, capsys):
    before_rows, before_files = snapshot(run_copy)
    with RunLock(run_copy):  # this test process is the first run
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "matinvent.cli", *argv(setup, run_copy, 24, "--resume")],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
        seconds = time.time() - t0
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"pid {os.getpid()}" in proc.stderr and "Traceback" not in proc.stderr
    after_rows, after_files = snapshot(run_copy)
    assert after_rows.equals(before_rows) and after_files == before_files  # the second process added nothing
    assert seconds < 120  # it did not wait for the lock (a run holds it for its whole length)
    assert not (run_copy / LOCK_FILE).exists()  # released by its holder
    # with the lock free the same command continues the run, and no crystal appears twice
    assert main(argv(setup, run_copy, 24, "--resume")) == 0
    df = read_memory(run_copy)
    assert int(df["valid"].sum()) == 24 and not df.duplicated(["iteration", "idx"]).any()
    assert len(df) > len(before_rows)


def test_lock_names_the_holder_and_is_freed_when_the_holder_is_killed(tmp_path):
    code = (
        f"from matinvent.rl.run_lock import RunLock; import time; RunLock({str(tmp_path)!r}).acquire(); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(600):
            text = (tmp_path / LOCK_FILE).read_text() if (tmp_path / LOCK_FILE).exists() else ""
            if text.strip():
                break
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(tmp_path) as lock:  # kill -9 released it; the stale file does not block
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid()) and lock.fd is not None
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()


# --- corrupt run-folder files: --resume exits 2 naming the file --------------------------------
def _garbage(path):
    path.write_bytes(b"\x00garbage\xff" * 10)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path):
    path.write_bytes(b"")


def _nan_agent(path):  # what a diverged update would have saved
    state = torch.load(path, weights_only=True)
    name = next(k for k in state["agent"] if k.endswith(".weight"))
    state["agent"][name] = torch.full_like(state["agent"][name], float("nan"))
    torch.save(state, path)


def _damage_pages(path):
    """Garbage over every page but the first (the schema): the file opens, reading rows fails."""
    data = bytearray(path.read_bytes())
    assert len(data) >= 2 * 4096, "the toy memory should span several sqlite pages"
    data[4096:] = bytes((i * 7 + 3) % 256 for i in range(len(data) - 4096))
    path.write_bytes(bytes(data))


def _drop_task_key(path):
    info = json.loads(path.read_text())
    del info["task"]
    path.write_text(json.dumps(info))


@pytest.mark.parametrize(
    "name, damage, needle",
    [
        ("memory.sqlite", _garbage, "not a matinvent memory database"),
        ("memory.sqlite", _damage_pages, "damaged"),
        ("checkpoint.pt", _empty, "the file is empty"),
        ("checkpoint.pt", _garbage, "not a readable checkpoint"),
        ("checkpoint.pt", _truncate, "not a readable checkpoint"),
        ("checkpoint.pt", _nan_agent, ".weight' holds non-finite values"),
        ("run.json", _drop_task_key, "missing key 'task'"),
        ("run.json", _garbage, "not valid JSON"),
        ("run.json", lambda p: p.write_text("null"), "must hold a JSON object"),
        ("metrics.csv", _garbage, "not a metrics table"),
        ("metrics.csv", lambda p: p.write_text("a,b\n1,2\n"), "not a metrics table"),
        ("memory.sqlite", lambda p: p.unlink(), "memory.sqlite is missing"),
    ],
)
def test_a_damaged_run_file_exits_2_naming_the_file(setup, run_copy, capsys, name, damage, needle):
    damage(run_copy / name)
    before = {n: (run_copy / n).read_bytes() for n in ("run.json", "metrics.csv") if (run_copy / n).exists()}
    assert_refused(capsys, argv(setup, run_copy, 18, "--resume"), str(run_copy / name), needle)
    assert before == {n: (run_copy / n).read_bytes() for n in before}  # nothing rewritten
    assert not (run_copy / LOCK_FILE).exists()


def test_memory_rows_lost_since_the_checkpoint_are_refused(setup, run_copy, capsys):
    with sqlite3.connect(str(run_copy / "memory.sqlite")) as conn:
        conn.execute("DELETE FROM crystals WHERE iteration = 0")
    assert_refused(capsys, argv(setup, run_copy, 18, "--resume"), f"{run_copy / 'memory.sqlite'} holds", "counts 12")


def test_memory_ahead_of_a_deleted_checkpoint_is_refused(setup, run_copy, capsys):
    (run_copy / "checkpoint.pt").unlink()
    assert_refused(capsys, argv(setup, run_copy, 18, "--resume"), "memory.sqlite", "rows up to iteration")


def test_a_fresh_start_refuses_a_folder_with_run_files_but_no_run_json(setup, run_copy, capsys):
    (run_copy / "run.json").unlink()
    assert_refused(capsys, argv(setup, run_copy, 18), "checkpoint.pt, metrics.csv of a run but no run.json")


# --- --resume compares the task definition, config and memory with the start ------------------------
@pytest.mark.parametrize(
    "task_text, needle",
    [
        (TASK_YAML.replace("center: 11.0", "center: 9.0"), "task windows was 'density 11 ± 0.5', now 'density 9 ±"),
        (TASK_YAML.replace("ramp: 3.0", "ramp: 1.0"), "task targets was"),  # same window, other reward
        (TASK_YAML + "reduce: mean\n", "task reduce was 'min', now 'mean'"),
    ],
)
def test_resume_refuses_a_changed_task_of_the_same_name(setup, run_copy, tmp_path, capsys, task_text, needle):
    before = snapshot(run_copy)
    root = tmp_path / "changed"
    root.mkdir()
    (root / "task.yaml").write_text(task_text)
    shutil.copy(setup / "cfg.yaml", root / "cfg.yaml")
    assert_refused(capsys, argv(root, run_copy, 18, "--resume"), needle, "choose another --out")
    rows, files = snapshot(run_copy)
    assert rows.equals(before[0]) and files == before[1]


@pytest.mark.parametrize(
    "line, needle",
    [
        ("batch_size: 16", "config key 'batch_size' was 6, now 16"),
        ("lr: 1", "config key 'lr' was 0.001, now 1.0"),
        ("kl_weights: {L: 0.5}", "config key 'kl_weights.L' was 1.0, now 0.5"),
    ],
)
def test_resume_refuses_a_changed_config_naming_the_key(setup, run_copy, tmp_path, capsys, line, needle):
    root = tmp_path / "changed"
    root.mkdir()
    shutil.copy(setup / "task.yaml", root / "task.yaml")
    key = line.split(":")[0]
    lines = [ln for ln in (setup / "cfg.yaml").read_text().splitlines() if not ln.startswith(key + ":")]
    (root / "cfg.yaml").write_text("\n".join([*lines, line]) + "\n")
    assert_refused(capsys, argv(root, run_copy, 18, "--resume"), needle)


def test_resume_refuses_another_method_or_seed(setup, run_copy, capsys):
    args = argv(setup, run_copy, 18, "--resume")
    assert_refused(capsys, [*args[:6], "reinforce", *args[7:]], "method was 'matinvent', now 'reinforce'")
    seed = args.index("--seed") + 1
    assert_refused(capsys, [*args[:seed], "3", *args[seed + 1 :]], "seed was 0, now 3")


def test_resume_accepts_operational_changes_and_a_larger_budget(setup, run_copy):
    assert main([*argv(setup, run_copy, 18, "--resume"), "--threads", "0"]) == 0
    df = read_memory(run_copy)
    assert int(df["valid"].sum()) == 18 and not df.duplicated(["iteration", "idx"]).any()
    assert json.loads((run_copy / "run.json").read_text())["budget"] == 18


# --- run.json only after every check -----------------------------------------------------------
def test_a_failed_start_leaves_nothing_that_blocks_the_retry(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert_refused(capsys, [*argv(setup, out, 6)[:-4], "--seed", "-5", "--out", str(out)], "seed must be")
    assert not out.exists()
    out.mkdir()  # a folder given by the user stays, but holds nothing
    assert_refused(capsys, [*argv(setup, out, 6)[:-4], "--seed", "-5", "--out", str(out)], "seed must be")
    assert list(out.iterdir()) == []
    assert main(argv(setup, out, 6)) == 0  # the retry with a valid seed runs
    assert json.loads((out / "run.json").read_text())["seed"] == 0 and int(read_memory(out)["valid"].sum()) == 6


def test_a_bad_memory_column_name_fails_before_run_json(setup, tmp_path):
    from matinvent.scoring.rewards import Target
    from matinvent.scoring.tasks import Task

    task = Task(name="bad", targets=(Target(prop="my-prop", kind="above", threshold=0.5),))  # not via a task file
    cfg = RLConfig(prior=str(setup / "prior"), batch_size=6, validity="none", threads=1)
    scorer = Scorer(task, oracles={"my-prop": LightFraction()})
    with pytest.raises(ValueError, match="cannot be a memory column"):
        optimize(task, "prior", 6, 0, tmp_path / "r", cfg, scorer=scorer, progress=False)
    assert not (tmp_path / "r").exists()


# --- prior folders: every failure names the file --------------------------------------------------
def _nan_weights(path):
    state = load_file(str(path))
    name = next(k for k in state if k.endswith(".weight"))
    state[name] = torch.full_like(state[name], float("inf"))
    save_file(state, str(path))


@pytest.mark.parametrize(
    "name, damage, needle",
    [
        ("model.safetensors", _truncate, "not a readable safetensors file"),
        ("model.safetensors", _garbage, "not a readable safetensors file"),
        ("model.safetensors", _empty, "not a readable safetensors file"),
        ("model.safetensors", _nan_weights, ".weight' holds non-finite values"),
        ("config.json", lambda p: p.write_text("null"), "must hold a JSON object, got NoneType"),
        ("config.json", lambda p: p.write_text("[1, 2]"), "must hold a JSON object, got list"),
        ("config.json", _garbage, "not UTF-8"),
        ("config.json", lambda p: p.write_text("{"), "not valid JSON"),
        ("config.json", lambda p: p.write_text('{"denoiser": 3, "diffusion": {}}'), "must be a mapping"),
        ("config.json", lambda p: p.write_text('{"diffusion": {}}'), "missing key 'denoiser'"),
        ("config.json", lambda p: p.write_text('{"format": "other/9", "denoiser": {}, "diffusion": {}}'), "format"),
    ],
)
def test_a_damaged_prior_exits_2_naming_the_file(setup, tmp_path, capsys, name, damage, needle):
    prior = tmp_path / "agent"
    shutil.copytree(setup / "run" / "agent", prior)  # a run's fine-tuned agent is a prior folder
    damage(prior / name)
    with pytest.raises(ConfigError, match="non-finite|safetensors|JSON|UTF-8|mapping|missing key|format"):
        load_prior(prior)
    out = tmp_path / "samples"
    args = ["sample", "--n", "2", "--checkpoint", str(prior), "--out", str(out), "--threads", "1"]
    assert_refused(capsys, args, str(prior / name), needle)


def test_an_intact_agent_folder_samples(setup, tmp_path):
    args = ["sample", "--n", "2", "--checkpoint", str(setup / "run" / "agent"), "--out", str(tmp_path / "s")]
    assert main([*args, "--threads", "1"]) == 0


def test_resume_may_move_the_oracles_to_a_dask_cluster(setup, run_copy):
    """Where the oracles run is operational (a new SLURM job brings a new scheduler): not a mismatch."""
    assert main([*argv(setup, run_copy, 18, "--resume"), "--executor", "dask", "--workers", "1"]) == 0
    df = read_memory(run_copy)
    assert int(df["valid"].sum()) == 18 and not df.duplicated(["iteration", "idx"]).any()
    assert (run_copy / "oracle_cache.sqlite").exists()
