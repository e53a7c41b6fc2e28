"""Oracles on a real Dask ``LocalCluster`` (2 worker processes): the same scores as local scoring, one
structure's failure costs only that structure, and a kill -9 mid-batch loses no finished evaluation."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from slow_oracles import FCC, SlowOracle, read_calls, rock_salts
from timeout_oracles import broken_factory

from matinvent.crystal.structure_hash import structure_key
from matinvent.io.cdvae_csv import read_cdvae_csv
from matinvent.oracles import OracleError
from matinvent.scoring.dask_executor import DaskExecutor, local_cluster
from matinvent.scoring.executor import OracleSpec, TransientReason
from matinvent.scoring.executors import make_executor
from matinvent.scoring.local_executor import LocalExecutor
from matinvent.scoring.oracle_cache import OracleCache
from matinvent.scoring.rewards import Target
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import Task, task_from_dict

SLOW = Task("slow", (Target(prop="slow", kind="above", threshold=2.3, ramp=1.0),))
HANG_GUARD_S = 60.0  # a hang guard, not a speed assertion


@pytest.fixture(scope="module")
def scheduler():
    """One 2-worker LocalCluster for the module; each test connects to it as to an external scheduler."""
    cluster = local_cluster(2)
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(scope="module")
def mp20(data_dir):
    """Four MP-20 fixture structures (pymatgen)."""
    return [c.to_structure() for c in read_cdvae_csv(data_dir / "mp20_sample.csv", limit=4).crystals]


def slow_spec(**kw) -> OracleSpec:
    return OracleSpec("slow", kw, factory=SlowOracle)


def test_dask_scores_equal_local_scores_values_and_reasons(scheduler, mp20):
    task = Task("two", (*SLOW.targets, Target(prop="density", kind="above", threshold=3.0, ramp=2.0)))
    batch = [*mp20, rock_salts(1, "Kr")[0]]  # the last one makes the slow oracle raise
    local = Scorer(task, oracles={"slow": slow_spec()}, validity="none", timeout_s=30)
    dask = Scorer(task, oracles={"slow": slow_spec()}, validity="none", executor=DaskExecutor(scheduler))
    in_process = Scorer(task, oracles={"slow": slow_spec()}, validity="none")(batch)
    try:
        a, b = local(batch), dask(batch)
    finally:
        local.close()
        dask.close()
    assert set(dask.specs) == {"slow", "density"}
    for prop in ("slow", "density"):
        np.testing.assert_array_equal(a.values[prop], b.values[prop])
        np.testing.assert_array_equal(in_process.values[prop], b.values[prop])
    np.testing.assert_array_equal(a.reward, b.reward)
    assert a.reason == b.reason and b.reason[:4] == [""] * 4
    assert b.reason[4] == "oracle 'slow': ValueError: slow oracle refuses this structure"
    assert math.isnan(b.values["slow"][4]) and b.failed.tolist() == [False] * 4 + [True]


def test_results_arrive_as_they_complete(scheduler):
    batch = [rock_salts(1, "Kr")[0], *rock_salts(3)]  # the first one takes 1 s, the others 0.05 s
    arrived: list[int] = []
    with DaskExecutor(scheduler) as ex:
        values, reasons = ex.evaluate(
            slow_spec(delay=0.05, mode="slow"), batch, on_result=lambda i, v, r: arrived.append(i)
        )
    assert sorted(arrived) == [0, 1, 2, 3] and arrived[-1] == 0  # the slow one last, not in submission order
    assert not np.isnan(values).any() and reasons == [""] * 4


def test_a_killed_worker_costs_only_its_structure(scheduler):
    batch = [*rock_salts(2), rock_salts(1, "Kr")[0], *rock_salts(3)[2:]]
    with DaskExecutor(scheduler) as ex:
        values, reasons = ex.evaluate(slow_spec(mode="crash"), batch)  # os._exit(1) in the worker
        assert math.isnan(values[2]) and isinstance(reasons[2], TransientReason)
        assert "worker lost (KilledWorker)" in reasons[2]
        assert not np.isnan(values[[0, 1, 3]]).any() and reasons[:2] + reasons[3:] == ["", "", ""]
        again, _ = ex.evaluate(slow_spec(), rock_salts(2))  # the nanny restarted the worker
        assert not np.isnan(again).any()


def test_a_timed_out_call_is_nan_and_transient(scheduler):
    start = time.monotonic()
    with DaskExecutor(scheduler, timeout_s=1) as ex:
        values, reasons = ex.evaluate(slow_spec(mode="hang"), [rock_salts(1, "Kr")[0], *rock_salts(2)])
    assert time.monotonic() - start < HANG_GUARD_S
    assert math.isnan(values[0]) and "timed out after 1 s" in reasons[0] and isinstance(reasons[0], TransientReason)
    assert not np.isnan(values[1:]).any() and reasons[1:] == ["", ""]


def test_an_oracle_that_cannot_be_built_raises_oracle_error(scheduler):
    with DaskExecutor(scheduler) as ex, pytest.raises(OracleError, match="no weights here"):
        ex.evaluate(OracleSpec("broken", factory=broken_factory), rock_salts(2))


def test_map_and_none_items(scheduler):
    with DaskExecutor(scheduler) as ex:
        results, reasons = ex.map(OracleSpec("echo", factory=Echo), ["a", None, "b"])
    assert results == ["a!", None, "b!"] and reasons == ["", "no structure", ""]


class Echo:
    """A ``map`` worker object: appends "!" (module-level, so workers import it by reference)."""

    def apply(self, item: str) -> str:
        return item + "!"


def test_the_command_oracle_runs_on_the_cluster_in_parallel(scheduler, tmp_path):
    pids = tmp_path / "pids"
    script = 'echo "$PPID" >> "$0"; sleep 0.2; wc -l < "$1"'  # its parent (a worker) and the CIF's line count
    task = task_from_dict(
        {
            "name": "cmd",
            "properties": {"n": {"target": "above", "threshold": 0.5}},
            "oracles": {"n": {"command": ["sh", "-c", script, str(pids), "{input}"]}},
        }
    )
    local = Scorer(task, validity="none")
    a = local(rock_salts(4))
    pids.unlink()
    dask = Scorer(task, validity="none", executor=DaskExecutor(scheduler))
    try:
        b = dask(rock_salts(4))
    finally:
        dask.close()
    assert set(dask.specs) == {"n"} and not dask.oracles
    parents = set(pids.read_text().split())
    assert len(parents) == 2 and str(os.getpid()) not in parents  # run by both workers, not here
    np.testing.assert_array_equal(a.values["n"], b.values["n"])
    assert not np.isnan(b.values["n"]).any()


def ppid_task(tmp_path: Path, barrier: int = 0) -> tuple[Path, Path]:
    """A task file whose command oracle logs its parent's pid (the process that ran it) and prints 2.5.

    ``barrier``: each call then waits (≤ 10 s) until that many calls have started, so calls that can run at
    the same time do, however the machine's load times the workers' start."""
    pids, task = tmp_path / "pids", tmp_path / "task.yaml"
    wait = f"n=0; while [ $(wc -l < {pids}) -lt {barrier} ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; "
    script = f"echo $PPID >> {pids}; {wait if barrier else ''}echo 2.5"
    task.write_text(
        "name: where\nproperties:\n  x: {target: above, threshold: 1}\n"
        f"oracles:\n  x: {{command: ['sh', '-c', '{script}', '{{input}}']}}\n"
    )
    return task, pids


def test_score_and_optimize_cli_with_executor_dask(scheduler, tmp_path):
    from rl_toy import save_tiny_prior

    from matinvent.cli import main
    from matinvent.io.run_memory import read_memory

    task, pids = ppid_task(tmp_path)
    folder = tmp_path / "cifs"
    folder.mkdir()
    for i, s in enumerate(rock_salts(3)):
        s.to(filename=str(folder / f"{i}.cif"))
    dask = ["--executor", "dask", "--scheduler", scheduler]
    out, cache = tmp_path / "scores.csv", tmp_path / "c.sqlite"
    assert (
        main(
            [
                "score",
                "--relax",
                "none",
                str(folder),
                "--task",
                str(task),
                "--out",
                str(out),
                *dask,
                "--cache",
                str(cache),
            ]
        )
        == 0
    )
    assert len(OracleCache(cache)) == 3 and out.read_text().count("2.5") == 3
    prior = save_tiny_prior(tmp_path / "prior")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"prior: {prior}\nbatch_size: 4\nvalidity: none\nthreads: 1\nrecheck_n: 0\nrelax: none\nsample_steps: null\n"
    )
    run = tmp_path / "run"
    argv = ["optimize", "--task", str(task), "--config", str(cfg), "--method", "prior", "--budget", "4"]
    assert main([*argv, "--out", str(run), *dask]) == 0
    parents = pids.read_text().split()
    assert len(parents) == 3 + 4 and str(os.getpid()) not in parents  # every call ran on the workers
    assert len(OracleCache(run / "oracle_cache.sqlite")) == 4 and read_memory(run)["valid"].sum() == 4
    assert main([*argv, "--out", str(tmp_path / "r2"), "--scheduler", scheduler]) == 2  # an address needs dask


def test_local_workers_without_a_timeout_run_the_calls_in_parallel(tmp_path):
    from matinvent.cli import main

    task, pids = ppid_task(tmp_path, barrier=2)  # the first call holds its worker until a second one starts
    folder = tmp_path / "cifs"
    folder.mkdir()
    for i, s in enumerate(rock_salts(4)):
        s.to(filename=str(folder / f"{i}.cif"))
    out = tmp_path / "scores.csv"
    assert (
        main(["score", "--relax", "none", str(folder), "--task", str(task), "--out", str(out), "--workers", "2"]) == 0
    )
    parents = set(pids.read_text().split())
    assert len(parents) == 2 and str(os.getpid()) not in parents and out.read_text().count("2.5") == 4


def test_an_executor_without_address_starts_and_stops_its_own_local_cluster():
    ex = DaskExecutor(workers=1)
    try:
        values, _ = ex.evaluate(slow_spec(), rock_salts(2))
        cluster = ex._cluster
        assert ex.client.scheduler.address.startswith("tcp://127.0.0.1:") and len(ex.client.nthreads()) == 1
    finally:
        ex.close()
    np.testing.assert_allclose(values, [s.density for s in rock_salts(2)])
    assert cluster.status.name == "closed" and ex._client is None


def test_make_executor_settings():
    assert make_executor() is None and make_executor("local", timeout_s=5) is None  # the Scorer's own default
    assert isinstance(make_executor("local", workers=2, timeout_s=5), LocalExecutor)
    assert make_executor("local", workers=2).timeout_s is None  # parallel, unbounded
    ex = make_executor("dask", workers=3)
    assert isinstance(ex, DaskExecutor) and ex.workers == 3 and ex._client is None  # started on first use
    for bad, needle in [
        (dict(kind="slurm"), "executor must be one of"),
        (dict(kind="local", scheduler="tcp://h:1"), "needs executor 'dask'"),
        (dict(kind="dask", scheduler="tcp://h:1", workers=2), "has its own workers"),
        (dict(kind="dask", scheduler="h:1"), "tcp://host:8786"),
        (dict(kind="dask", workers=0), "workers must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=needle):
            make_executor(**bad)


def cached_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    try:
        with sqlite3.connect(path) as conn:
            return {row[0] for row in conn.execute("SELECT structure FROM results")}
    except sqlite3.OperationalError:  # the writer created the file but not yet its table
        return set()


def test_kill_9_mid_batch_then_rerun_calls_only_the_unfinished(scheduler, tmp_path):
    n, cache, calls = 10, tmp_path / "cache.sqlite", tmp_path / "calls"
    script = Path(__file__).resolve().parents[1] / "slow_oracles.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(cache), str(calls), "0.4", str(n), scheduler],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while len(cached_keys(cache)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the scoring process, mid-batch
        proc.wait()
    with DaskExecutor(scheduler) as ex:  # the calls it left running on the workers finish unheard
        while any(ex.client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
    done = cached_keys(cache)
    structures = rock_salts(n)
    keys = {structure_key(s): f"{s.lattice.a:.4f}" for s in structures}
    assert 3 <= len(done) < n and done <= set(keys)
    first = read_calls(calls)
    assert {keys[k] for k in done} <= set(first)
    scorer = Scorer(SLOW, oracles={"slow": slow_spec(delay=0.4, calls_file=str(calls))}, validity="none",
                    executor=DaskExecutor(scheduler), cache=cache)  # fmt: skip
    try:
        scores = scorer(structures)
    finally:
        scorer.close()
    second = read_calls(calls)[len(first) :]
    assert sorted(second) == sorted(keys[k] for k in set(keys) - done)  # each unfinished one once, no other
    np.testing.assert_allclose(scores.values["slow"], [s.density for s in structures])
    assert len(OracleCache(cache)) == n


def test_the_relaxation_runs_on_the_cluster_and_is_cached(scheduler, tmp_path):
    from ase.calculators.emt import EMT
    from pymatgen.core import Lattice, Structure

    task = task_from_dict(
        {
            "name": "ef_density",
            "properties": {
                "formation_energy": {"target": "below", "threshold": 5.0, "ramp": 1.0},
                "density": {"target": "above", "threshold": 1.0, "ramp": 1.0},
            },
        }
    )
    cells = [Structure(Lattice.cubic(a), ["Cu"] * 4, FCC) for a in (3.8, 3.4)]  # fcc Cu, strained
    relax_kw = {"calculator": EMT(), "model": "emt", "max_steps": 60}
    local = Scorer(task, relax="mlip", validity="none", **relax_kw)
    a = local(cells)
    cache = tmp_path / "cache.sqlite"
    dask = Scorer(task, relax="mlip", validity="none", executor=DaskExecutor(scheduler), cache=cache, **relax_kw)
    try:
        b = dask(cells)
    finally:
        dask.close()
    assert dask.relaxer is None and set(dask.specs) == {"density"}  # relaxed on the workers, not here
    for prop in task.properties:
        np.testing.assert_allclose(a.values[prop], b.values[prop], rtol=1e-9)
    assert b.structures[0].lattice.a == pytest.approx(a.structures[0].lattice.a, rel=1e-9)
    assert b.structures[0].lattice.a < 3.7  # relaxed (from 3.8 Å)
    again = Scorer(task, relax="mlip", validity="none", cache=cache, **relax_kw)
    c = again(cells)  # in-process now, from the cache: no relaxation, the same relaxed cells and values
    assert again.relaxer.n_relaxations == 0
    for prop in task.properties:
        np.testing.assert_allclose(c.values[prop], b.values[prop], rtol=1e-12)
    assert structure_key(c.structures[1]) == structure_key(b.structures[1])
