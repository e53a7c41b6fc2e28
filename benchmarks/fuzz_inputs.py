"""Fuzz matinvent with hostile inputs, as a careless or unlucky user would feed them (issue #12).

Generates (seeded, deterministic) mutated CIFs, extxyz files, CDVAE CSV rows, RL and pretraining
configs, task files and corrupt run and prior folders (``benchmarks/fuzz/``), exercises each one
in-process in a worker subprocess (``matinvent.cli.parser.main`` with captured output, or the library:
``read_structure_items`` + ``Scorer``, ``load_rl_config``, ``load_task``, ``load_prior``,
``optimize --resume`` on a tiny run) under a per-input wall-clock guard, and reports per kind:
inputs, clean outcomes, tracebacks, folder aborts, hangs, invalid structures scored, invalid
settings or folders accepted, good inputs refused and refusals without a reason
(``fuzz/exercise.py`` defines them). A hang (over ``--hang-s``) kills the worker and starts a new one.

    python benchmarks/fuzz_inputs.py [--n 5000] [--seed 0] [--out runs/fuzz] [--kinds cif,task]

Writes ``benchmarks/results/fuzz_inputs.json`` and ``.md``; exits 1 if any problem was found.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

CATEGORIES = (
    "traceback",
    "folder_abort",
    "hang",
    "invalid_scored",
    "invalid_accepted",
    "good_refused",
    "unexplained",
    "fuzzer_error",
)
RESULTS = Path(__file__).parent / "results"
MEMORY_LIMIT = 8 << 30  # bytes of address space per worker: a memory bomb fails instead of swapping the machine


class Worker:
    """A subprocess exercising cases sent on its stdin; answers one JSON line per case on a pipe."""

    def __init__(self, scratch: Path, log: Path) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(scratch), str(write)],
            stdin=subprocess.PIPE,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            pass_fds=(write,),
            start_new_session=True,  # its own process group: a hang is killed with its children
            env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
        )
        os.close(write)
        self.fd, self.buffer = read, b""
        if self.read(600) != "ready":
            raise RuntimeError(f"the fuzz worker did not start (see {log})")

    def read(self, timeout: float) -> str | None:
        """The next line, or ``None`` after ``timeout`` seconds (or when the worker died)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def run(self, case: dict, timeout: float) -> dict | None:
        self.proc.stdin.write((json.dumps(case) + "\n").encode())
        self.proc.stdin.flush()
        line = self.read(timeout)
        return json.loads(line) if line else None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        os.close(self.fd)


def worker_main(scratch: Path, fd: int) -> None:
    """The worker loop: one case per stdin line, one ``{"problems", "seconds"}`` line per case on ``fd``."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import torch

    torch.set_num_threads(1)
    import matinvent.cli.parser  # noqa: F401 - imported before the first case, not inside its time
    from fuzz.exercise import STATS, run_case

    os.write(fd, b"ready\n")
    for line in sys.stdin:
        case = json.loads(line)
        work = scratch / str(case["id"])
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            problems = run_case(case, work)
        except BaseException as exc:  # noqa: BLE001 - a bug of the fuzzer itself, reported as such
            problems = [("fuzzer_error", f"{type(exc).__name__}: {exc}")]
        seconds = time.perf_counter() - t0
        shutil.rmtree(work, ignore_errors=True)
        os.write(fd, (json.dumps({"problems": problems, "seconds": seconds, "stats": dict(STATS)}) + "\n").encode())


def exercise(cases: list[dict], workdir: Path, hang_s: float, progress: bool) -> list[dict]:
    """Every case's result: problems (a hang added here), seconds."""
    scratch, log = workdir / "scratch", workdir / "worker.log"
    scratch.mkdir(exist_ok=True)
    worker = Worker(scratch, log)
    results = []
    t0 = time.time()
    for k, case in enumerate(cases):
        result = worker.run(case, hang_s)
        if result is None:
            worker.kill()
            result = {"problems": [("hang", f"no answer within {hang_s:g} s")], "seconds": hang_s, "stats": {}}
            shutil.rmtree(scratch / str(case["id"]), ignore_errors=True)
            worker = Worker(scratch, log)
        results.append(result)
        if progress and (k + 1) % 250 == 0:
            print(f"  {k + 1}/{len(cases)} inputs, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    worker.kill()
    return results


def summarize(cases: list[dict], results: list[dict]) -> dict:
    table: dict[str, dict] = {}
    examples: dict[str, list[dict]] = {}
    outcomes: dict[str, Counter] = {}
    for case, result in zip(cases, results, strict=True):
        row = table.setdefault(case["kind"], {"inputs": 0, "clean": 0, **dict.fromkeys(CATEGORIES, 0), "max_s": 0.0})
        row["inputs"] += 1
        row["max_s"] = round(max(row["max_s"], result["seconds"]), 2)
        found = Counter(cat for cat, _ in result["problems"])
        row["clean"] += not found
        outcomes.setdefault(case["kind"], Counter()).update(result["stats"])
        for cat in found:
            row[cat] = row.get(cat, 0) + 1
            examples.setdefault(cat, [])
            if sum(e["kind"] == case["kind"] for e in examples[cat]) < 5:
                detail = next(d for c, d in result["problems"] if c == cat)
                examples[cat].append(
                    {k: case[k] for k in ("id", "kind", "mode", "mutation", "label", "path")} | {"detail": detail}
                )
    total = {k: sum(r.get(k, 0) for r in table.values()) for k in ("inputs", "clean", *CATEGORIES)}
    return {"table": table, "total": total, "examples": examples, "outcomes": {k: dict(v) for k, v in outcomes.items()}}


def markdown(summary: dict, meta: dict) -> str:
    cols = ("inputs", "clean", *CATEGORIES, "max_s")
    lines = [
        "# Fuzzing matinvent with hostile inputs (`benchmarks/fuzz_inputs.py`)",
        "",
        f"{meta['n']} inputs, seed {meta['seed']}, {meta['seconds']:.0f} s on one core "
        f"(generation {meta['generate_s']:.0f} s), hang = no answer within {meta['hang_s']:g} s.",
        "",
        "| kind | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for kind, row in {**summary["table"], "total": summary["total"]}.items():
        lines.append(f"| {kind} | " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    lines += [
        "",
        "Outcomes per kind (rows: items read; scored: finite property or reward > 0; verified: scored items",
        "the independent checks of `fuzz/checks.py` looked at; loaded / refused; exit codes):",
        "",
    ]
    lines += [
        f"- {kind}: {', '.join(f'{k} {v}' for k, v in sorted(c.items()))}" for kind, c in summary["outcomes"].items()
    ]
    for cat, items in summary["examples"].items():
        lines += ["", f"## {cat}", ""]
        lines += [f"- {e['kind']} #{e['id']} ({e['mode']}, {e['mutation'][:80]}): {e['detail'][:300]}" for e in items]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="number of hostile inputs (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/fuzz", help="workdir for the generated inputs (replaced)")
    p.add_argument("--kinds", help="comma-separated subset of kinds (default: all)")
    p.add_argument("--hang-s", type=float, default=10.0, help="seconds after which an input counts as a hang")
    p.add_argument("--results", default=str(RESULTS / "fuzz_inputs"), help="results path without suffix")
    args = p.parse_args()
    from fuzz.generate import KINDS, generate

    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    if unknown := set(kinds) - set(KINDS):
        p.error(f"unknown kinds {sorted(unknown)} (choose from {', '.join(KINDS)})")
    workdir = Path(args.out).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cases = [c for c in generate(workdir, args.n, args.seed) if c["kind"] in kinds]
    generate_s = time.time() - t0
    print(f"generated {len(cases)} inputs in {generate_s:.0f} s under {workdir}", file=sys.stderr)
    results = exercise(cases, workdir, args.hang_s, progress=True)
    summary = summarize(cases, results)
    meta = {
        "n": len(cases),
        "seed": args.seed,
        "seconds": time.time() - t0,
        "generate_s": generate_s,
        "hang_s": args.hang_s,
        "kinds": kinds,
    }
    failures = [
        {**{k: c[k] for k in ("id", "kind", "mutation", "path")}, **r}
        for c, r in zip(cases, results, strict=True)
        if r["problems"]
    ]
    record = {
        "meta": meta,
        **summary,
        "problem_cases": failures,
        "mutations": dict(Counter(f"{c['kind']}:{c['mutation'].split(':')[0].split('+')[0]}" for c in cases)),
    }
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
    text = markdown(summary, meta)
    out.with_suffix(".md").write_text(text)
    print(text.split("\n## ")[0])
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 1 if any(summary["total"][c] for c in CATEGORIES) else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
