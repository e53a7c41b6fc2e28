"""The oracle-result cache: keys, storage, damaged files, the Scorer's use of it, and `optimize --resume`
after a kill -9 in the middle of a batch calling the oracles only for the unfinished structures."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from rl_toy import save_tiny_prior
from slow_oracles import SlowOracle, read_calls, rock_salts

from matinvent.cli import main
from matinvent.config_io import ConfigError
from matinvent.crystal.record import Crystal
from matinvent.crystal.structure_hash import structure_key
from matinvent.io.run_memory import read_memory
from matinvent.oracles import CommandOracle
from matinvent.rl import load_rl_config, optimize
from matinvent.rl.config import rl_config_from_dict
from matinvent.rl.loop import ORACLE_CACHE
from matinvent.scoring.executor import OracleSpec
from matinvent.scoring.oracle_cache import OracleCache, OracleCacheError, oracle_key
from matinvent.scoring.rewards import Target
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import Task, load_task

SLOW = Task("slow", (Target(prop="slow", kind="above", threshold=2.3, ramp=1.0),))


def test_put_and_get_round_trip_nan_reason_and_data(tmp_path):
    path = tmp_path / "c.sqlite"
    with OracleCache(path) as cache:
        assert cache.get("s1", "o") is None and not path.exists()  # a lookup creates nothing
        cache.put("s1", "o", 1.25)
        cache.put("s2", "o", math.nan, "oracle 'o': ValueError: no", data={"a": [1, None]})
        cache.put("s1", "other", 7.0)
        got = cache.get_many(["s2", None, "s1", "s3"], "o")
    assert got[2].value == 1.25 and got[2].reason == "" and got[2].data is None
    assert math.isnan(got[0].value) and got[0].reason.endswith("no") and got[0].data == {"a": [1, None]}
    assert set(got) == {0, 2}
    with OracleCache(path) as cache:  # committed: a new connection (a new process) sees it
        assert len(cache) == 3 and cache.get("s1", "other").value == 7.0
        cache.put("s1", "other", 8.0)  # replaced, not duplicated
        assert len(cache) == 3 and cache.get("s1", "other").value == 8.0


def test_a_damaged_or_foreign_file_is_refused_naming_it(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(OracleCacheError, match="junk.sqlite: not a matinvent oracle cache"):
        OracleCache(junk).get("s", "o")
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE results (x TEXT)")
    with pytest.raises(OracleCacheError, match="foreign.sqlite: oracle cache of schema version"):
        OracleCache(foreign).put("s", "o", 1.0)


def test_oracle_keys_tell_oracles_and_settings_apart():
    cmd = {"name": "e", "command": "run {input}"}
    keys = {
        oracle_key(OracleSpec("density")),
        oracle_key(OracleSpec("band_gap")),
        oracle_key(OracleSpec("e", cmd, factory=CommandOracle)),
        oracle_key(OracleSpec("e", {**cmd, "command": "run --fast {input}"}, factory=CommandOracle)),
        oracle_key(OracleSpec("e", {**cmd, "timeout": 5.0}, factory=CommandOracle)),
        oracle_key(OracleSpec("slow", {"delay": 0.1}, factory=SlowOracle)),
    }
    assert len(keys) == 6
    assert oracle_key(OracleSpec("x", {"b": 1, "a": 2})) == oracle_key(OracleSpec("x", {"a": 2, "b": 1}))
    a, b = (oracle_key(OracleSpec("x", {"calc": object()})) for _ in range(2))
    assert a == b  # an object counts by its type, not its address


def test_structure_key_is_stable_across_cif_and_tells_cells_apart(tmp_path):
    s = Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "s.cif"))
    back = Crystal.read_cif(tmp_path / "s.cif").to_structure()
    assert structure_key(back) == structure_key(s)
    shifted = Structure(s.lattice, ["Cs", "Cl"], [[1.0, -0.0, 0], [0.5, 0.5, -0.5]])  # same sites, wrapped
    assert structure_key(shifted) == structure_key(s)
    for other in (
        Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(s.lattice, ["Cs", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(s.lattice, ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.51]]),
    ):
        assert structure_key(other) != structure_key(s)


def test_scorer_looks_up_first_and_stores_each_result(tmp_path):
    calls, cache = tmp_path / "calls", tmp_path / "c.sqlite"
    spec = OracleSpec("slow", {"calls_file": str(calls)}, factory=SlowOracle)
    batch = [*rock_salts(3), rock_salts(1, "Kr")[0]]  # the Kr one makes the oracle raise: cached as failed
    first = Scorer(SLOW, oracles={"slow": spec}, validity="none", cache=cache)(batch)
    assert len(read_calls(calls)) == 4 and len(OracleCache(cache)) == 4
    scorer = Scorer(SLOW, oracles={"slow": spec}, validity="none", cache=cache)
    again = scorer([*batch, *rock_salts(4)[3:]])  # one new structure
    scorer.close()
    assert len(read_calls(calls)) == 5  # only the new one was evaluated
    np.testing.assert_array_equal(again.values["slow"][:4], first.values["slow"])
    assert math.isnan(again.values["slow"][3]) and again.reward[3] == 0 and again.failed[3]


def test_timeouts_are_not_cached_but_oracle_errors_are(tmp_path):
    cache = tmp_path / "c.sqlite"
    kr = rock_salts(1, "Kr")[0]
    for mode, stored in (("hang", False), ("raise", True)):
        spec = OracleSpec("slow", {"mode": mode}, factory=SlowOracle)
        scorer = Scorer(SLOW, oracles={"slow": spec}, validity="none", timeout_s=1, cache=cache)
        try:
            scores = scorer([rock_salts(1)[0], kr])
        finally:
            scorer.close()
        assert math.isnan(scores.values["slow"][1])
        assert (OracleCache(cache).get(structure_key(kr), oracle_key(spec)) is not None) == stored, mode
        assert OracleCache(cache).get(structure_key(rock_salts(1)[0]), oracle_key(spec)).value > 2


def test_instances_are_not_cached(tmp_path):
    oracle = SlowOracle(calls_file=str(tmp_path / "calls"))
    for _ in range(2):
        Scorer(SLOW, oracles={"slow": oracle}, validity="none", cache=tmp_path / "c.sqlite")(rock_salts(2))
    assert len(read_calls(tmp_path / "calls")) == 4 and not (tmp_path / "c.sqlite").exists()


def test_score_cli_cache_rerun_calls_nothing(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for i, s in enumerate(rock_salts(3)):
        s.to(filename=str(folder / f"{i}.cif"))
    calls = tmp_path / "calls"
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: lines\nproperties:\n  n: {target: above, threshold: 1}\n"
        f"oracles:\n  n: {{command: ['sh', '-c', 'echo x >> {calls}; wc -l < \"$0\"', '{{input}}']}}\n"
    )
    out1, out2, cache = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.sqlite"
    assert (
        main(["score", "--relax", "none", str(folder), "--task", str(task), "--out", str(out1), "--cache", str(cache)])
        == 0
    )
    assert (
        main(["score", "--relax", "none", str(folder), "--task", str(task), "--out", str(out2), "--cache", str(cache)])
        == 0
    )
    assert len(read_calls(calls)) == 3 and out1.read_text() == out2.read_text()


def test_rl_config_executor_keys_are_validated_naming_the_key():
    assert rl_config_from_dict({"executor": "dask", "workers": 3}).workers == 3
    assert rl_config_from_dict({"workers": 2}).executor == "local"  # local worker processes
    for bad, key in [
        ({"executor": "slurm"}, "'executor'"),
        ({"executor": "dask", "scheduler": "node:8786"}, "'scheduler'"),
        ({"scheduler": "tcp://node:8786"}, "'scheduler'"),
        ({"executor": "dask", "workers": 0}, "'workers'"),
        ({"executor": "dask", "scheduler": "tcp://node:8786", "workers": 2}, "'workers'"),
    ]:
        with pytest.raises(ConfigError, match=key):
            rl_config_from_dict(bad)


def test_optimize_killed_mid_batch_resumes_without_recalling_finished_structures(tmp_path):
    """A command oracle SIGKILLs the optimize process at its 9th call, in the middle of a batch."""
    prior = save_tiny_prior(tmp_path / "prior")
    calls = tmp_path / "calls"
    script = f'cksum < "$0" >> {calls}; [ "$(wc -l < {calls})" -eq 9 ] && kill -9 $PPID && sleep 1; echo 1.5'
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: toy\nproperties:\n  x: {target: above, threshold: 1}\n"
        f"oracles:\n  x: {{command: ['sh', '-c', '{script}', '{{input}}']}}\n"
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"prior: {prior}\nbatch_size: 6\nvalidity: none\nthreads: 1\nrecheck_n: 0\nrelax: none\nsample_steps: null\n"
    )
    out = tmp_path / "run"
    argv = ["optimize", "--task", str(task), "--config", str(cfg), "--method", "prior", "--budget", "12"]
    proc = subprocess.run([sys.executable, "-m", "matinvent.cli", *argv, "--out", str(out)], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    first = read_calls(calls)[::2]  # cksum prints "CRC SIZE": one structure per two words
    committed = int(read_memory(out)["valid"].sum())  # the batches scored before the killed one
    assert len(first) == 9 and committed < 8
    assert len(OracleCache(out / ORACLE_CACHE)) == 8  # every finished call, the killed batch's too
    optimize(load_task(task), "prior", 12, 0, out, load_rl_config(cfg), resume=True, progress=False)
    second = read_calls(calls)[::2][9:]
    assert len(second) == len(set(second)) == 12 - 8  # the budget less the finished calls, each once
    assert first[8] in second and not set(second) & set(first[:8])  # the killed call again, no finished one
    rows = read_memory(out).query("valid == 1")
    assert len(rows) == 12 and (rows["x"] == 1.5).all()
