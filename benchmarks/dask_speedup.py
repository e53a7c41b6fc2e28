"""Scoring throughput with a slow oracle: local serial vs the Dask executor on a 2-worker LocalCluster.

    python benchmarks/dask_speedup.py [--n 64] [--delay 0.5] [--workers 2]

The oracle sleeps ``--delay`` seconds per structure (a stand-in for DFT or an MLIP that waits on
something other than this CPU), so the ideal speed-up is the number of workers. Both runs score the
same ``--n`` distinct rock-salt cells through :class:`matinvent.scoring.scorer.Scorer` (``validity="none"``):
in-process, then with ``DaskExecutor(workers=N)``. The Dask cluster is started (and its workers have
built the oracle) before the timed call, as in a run where it serves many batches; its start-up is
reported on its own. Prints a table and writes ``benchmarks/results/dask_speedup.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


class SleepOracle:
    """``len(structure)`` after sleeping ``delay`` seconds (the oracle protocol: ``evaluate`` on a list)."""

    name, unit, batch_size = "sleep", "atoms", 1

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        out = []
        for s in structures:
            time.sleep(self.delay)
            out.append(float(len(s)))
        return np.array(out)

    def __call__(self, structures: list[Any]) -> np.ndarray:
        return self.evaluate(list(structures))


def cells(n: int) -> list[Any]:
    """``n`` distinct CsCl-type NaCl cells (edges 5.00, 5.01, ... Å)."""
    from pymatgen.core import Lattice, Structure

    return [Structure(Lattice.cubic(5.0 + 0.01 * i), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="structures (one oracle call each)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds per oracle call")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--out", type=Path, default=RESULTS / "dask_speedup.json")
    args = parser.parse_args()

    from matinvent.scoring.dask_executor import DaskExecutor
    from matinvent.scoring.executor import OracleSpec
    from matinvent.scoring.rewards import Target
    from matinvent.scoring.scorer import Scorer
    from matinvent.scoring.tasks import Task

    task = Task("sleep", (Target(prop="sleep", kind="above", threshold=1.0),))
    spec = OracleSpec("sleep", {"delay": args.delay}, factory=SleepOracle)
    batch = cells(args.n)

    local = Scorer(task, oracles={"sleep": spec}, validity="none")  # the spec built in-process
    t0 = time.perf_counter()
    serial = local(batch)
    t_local = time.perf_counter() - t0

    executor = DaskExecutor(workers=args.workers)
    dask = Scorer(task, oracles={"sleep": spec}, validity="none", executor=executor)
    try:
        t0 = time.perf_counter()
        executor.evaluate(OracleSpec("sleep", {"delay": 0.0}, factory=SleepOracle), batch[: 4 * args.workers])
        t_start = time.perf_counter() - t0  # cluster start, worker imports, oracle built once per worker
        t0 = time.perf_counter()
        parallel = dask(batch)
        t_dask = time.perf_counter() - t0
    finally:
        dask.close()
    same = bool(np.array_equal(serial.values["sleep"], parallel.values["sleep"]) and serial.reason == parallel.reason)

    result = {
        "n": args.n,
        "delay_s": args.delay,
        "workers": args.workers,
        "local_serial_s": round(t_local, 2),
        "dask_s": round(t_dask, 2),
        "dask_startup_s": round(t_start, 2),
        "speedup": round(t_local / t_dask, 3),
        "speedup_with_startup": round(t_local / (t_dask + t_start), 3),
        "ideal_speedup": args.workers,
        "identical_scores": same,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": f"python benchmarks/dask_speedup.py --n {args.n} --delay {args.delay} --workers {args.workers}",
    }
    rows = [
        ("local serial", result["local_serial_s"], "1.00"),
        (f"dask, {args.workers} workers", result["dask_s"], f"{result['speedup']:.2f}"),
        ("dask incl. cluster start", round(t_dask + t_start, 2), f"{result['speedup_with_startup']:.2f}"),
    ]
    table = ["| executor | wall (s) | speed-up |", "|---|---:|---:|"]
    table += [f"| {a} | {b:.2f} | {c}× |" for a, b, c in rows]
    text = "\n".join(table)
    print(text)
    print(f"identical scores: {same}; cluster start {t_start:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = (
        f"# Dask executor speed-up\n\n{args.n} evaluations of a {args.delay:g} s sleep oracle, scored with "
        f"`Scorer` in-process vs `DaskExecutor(workers={args.workers})` (a LocalCluster, started before the "
        f"timed call). Machine: {result['machine']}.\n\n{text}\n\nScores identical: {same}. "
        f"Rerun: `{result['command']}`.\n"
    )
    args.out.with_suffix(".md").write_text(md)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
