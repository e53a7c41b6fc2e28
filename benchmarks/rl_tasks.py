"""RL benchmark, paper Tables 1–4: Burden and Diversity ratio per task and method, 3 seeds.

    python benchmarks/rl_tasks.py                       # all 10 tasks × 5 methods × seeds 7 8 9, budget 600
    python benchmarks/rl_tasks.py --tasks density hhi --methods prior matinvent --seeds 7
    python benchmarks/rl_tasks.py --set ppo_clip=0.2 --set natoms_action=true --runs runs/variant
    python benchmarks/rl_tasks.py --recheck 3           # afterwards: relax ≤ 3 hits per run (SevenNet-0)
    python benchmarks/rl_tasks.py --table-only          # rebuild tables/curves from the run folders
    python benchmarks/rl_tasks.py --rehull              # rechecks' E_hull against a newer shipped hull
    python benchmarks/rl_tasks.py --paper               # the full reproduction (GPU machine, see below)
    python benchmarks/rl_tasks.py --methods matinvent --runs runs/v2 --keep-rows benchmarks/results/rl_tasks.json
                                                        # re-run one method; the other rows from the earlier JSON

Each (task, method, seed) is one ``matinvent optimize`` run folder under ``--runs`` (1 torch
thread each, ``--jobs`` at a time) with ``configs/rl_benchmark.yaml`` plus ``--set`` overrides.
Resumable: finished runs are skipped, interrupted ones continue with ``--resume``. With fewer
than 100 distinct hits in the budget, Burden is given as evaluations per hit (marked *). The
diversity ratio is taken at min(3000, budget) evaluations. ``--paper`` = budget 3000, seeds
0–4, ``device=cuda``, 8 runs at a time on one GPU. Writes ``benchmarks/results/<name>.{json,md}``
(tables in the paper's layout with the paper's numbers and the ratio to our frozen prior) and
overlaid curves ``<name>_<task>_*.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rl_tables import PAPER_BURDEN, kept_origins, large_sample_ratio, markdown, run_row

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "rl_benchmark.yaml"
SPO = ["band_gap", "formation_energy", "bulk_modulus", "shear_modulus", "density", "hhi"]
MPO = ["T1", "T2", "T3", "T4"]
METHODS = ["prior", "matinvent", "weighted-denoising", "reinforce", "hill-climb"]


def run_dir(runs: Path, task: str, method: str, seed: int) -> Path:
    return runs / f"{task}_{method}_s{seed}"


def is_finished(path: Path, budget: int) -> bool:
    summary = path / "summary.json"
    if not summary.exists():
        return False
    s = json.loads(summary.read_text())
    return bool(s.get("finished")) and s.get("budget") == budget


def parse_sets(items: list[str]) -> dict:
    """``key=value`` overrides, values read as YAML (``true``, ``0.2``, ``{L: 0.1}``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_config(runs: Path, budget: int, overrides: dict) -> Path:
    """configs/rl_benchmark.yaml + overrides, the diversity ratio at min(3000, budget), 1 thread."""
    cfg = yaml.safe_load(CONFIG.read_text()) or {}
    cfg.update({"diversity_budget": min(3000, budget), "threads": 1})
    cfg.update(overrides)
    path = runs / f"config_budget{budget}.yaml"
    runs.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg, sort_keys=False)
    if path.exists() and any(runs.glob("*/run.json")):
        diff = config_difference(yaml.safe_load(path.read_text()) or {}, cfg)
        if diff:
            raise SystemExit(f"{path}: {diff}; this invocation's settings differ, use another --runs folder")
    path.write_text(text)
    return path


def rl_defaults() -> dict:
    """``RLConfig``'s defaults as plain values (what a config file lacking a key means)."""
    import dataclasses

    from matinvent.rl.config import RLConfig

    return dataclasses.asdict(RLConfig())


def differing_settings(old: dict, new: dict) -> list[str]:
    """Keys whose values differ, a key one side lacks counting as ``RLConfig``'s default there."""
    defaults, missing = rl_defaults(), object()
    return [
        k
        for k in dict.fromkeys([*old, *new])
        if old.get(k, defaults.get(k, missing)) != new.get(k, defaults.get(k, missing))
    ]


def config_difference(old: dict, new: dict) -> str | None:
    """The first setting that differs; a key the old file lacks is fine at ``RLConfig``'s default (a newer
    release's switch, off), so a benchmark started before the switch existed still resumes."""
    differ = set(differing_settings(old, new))
    for key in dict.fromkeys([*old, *new]):
        if key not in new:
            return f"key {key!r} is gone"
        if key in differ:
            return (
                f"key {key!r} is new and not at its default"
                if key not in old
                else f"key {key!r} was {old[key]!r}, now {new[key]!r}"
            )
    return None


def command(task: str, method: str, seed: int, budget: int, path: Path, config: Path) -> list[str]:
    cmd = [sys.executable, "-m", "matinvent.cli", "optimize", "--task", task, "--method", method]
    cmd += ["--budget", str(budget), "--seed", str(seed), "--out", str(path), "--config", str(config)]
    if (path / "run.json").exists():
        cmd.append("--resume")
    return cmd


def run_all(jobs: list[list[str]], names: list[str], logs: list[Path], n_parallel: int) -> None:
    """Run the commands ``n_parallel`` at a time, each logging to its file."""
    todo = list(zip(jobs, names, logs, strict=True))
    print(f"{len(todo)} runs to do, {n_parallel} at a time", flush=True)
    running: list[tuple[subprocess.Popen, str]] = []
    while todo or running:
        while todo and len(running) < n_parallel:
            cmd, name, log = todo.pop(0)
            fh = open(log, "a")  # noqa: SIM115 - closed with the process
            running.append((subprocess.Popen(cmd, stdout=fh, stderr=fh), name))
            print(f"started {name}", flush=True)
        time.sleep(2)
        for proc, name in list(running):
            if proc.poll() is not None:
                running.remove((proc, name))
                print(f"finished {name} (exit {proc.returncode})", flush=True)


PRIOR_RATES = RESULTS / "prior_hit_rates.json"


def settings_difference(kept: dict | None, here: dict | None) -> str:
    """'key kept there, here here' for every setting in which two run sets' resolved configs differ."""
    if not kept or not here:
        return ""
    defaults = rl_defaults()
    return "; ".join(
        f"{k} {kept.get(k, defaults.get(k))!r} there, {here.get(k, defaults.get(k))!r} here"
        for k in differing_settings(kept, here)
    )


def _read_result(path: Path) -> dict:
    try:
        old = json.loads(Path(path).read_text())
        if not isinstance(old, dict) or not all(isinstance(r, dict) for r in old["rows"]):
            raise TypeError("rows are not objects")
        return old
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"--keep-rows {path}: not a rl_tasks.py result JSON ({exc})") from exc


def _settings(path: Path | str, old: dict) -> str:
    return f"{path} ({old.get('config')} + {old.get('overrides') or 'no overrides'}, budget {old.get('budget')})"


def kept_rows(path: Path, here: dict | None = None) -> tuple[dict[tuple[str, str], dict], dict[str, str]]:
    """Rows of an earlier result JSON by (task, method), each with ``kept_from`` = the run set it was measured
    in, and per such origin a line naming its settings (and where they differ from ``here``, the resolved
    config of this run set): ``--keep-rows`` fills the cells this run set lacks.

    A row the earlier JSON itself kept from a still earlier one keeps that origin (and, where that file is
    still there, its settings are read from it), so chaining ``--keep-rows`` never relabels old rows."""
    old = _read_result(path)
    stored = kept_origins(old)  # the lines the earlier JSON gave its own kept rows
    rows, origins = {}, {}
    for r in old["rows"]:
        origin = r.get("kept_from") or str(path)
        if origin not in origins:
            src = old if origin == str(path) else None
            if src is None and Path(origin).is_file():
                src = _read_result(Path(origin))
            if src is None:  # the earlier file is gone: its line as that JSON gave it
                origins[origin] = stored.get(origin, f"{origin} (settings not recorded)")
            else:
                line = _settings(origin, src)
                differ = settings_difference(src.get("config_values"), here)
                origins[origin] = line + ("; differs in " + differ if differ else "")
        rows[(r["task"], r["method"])] = dict(r, kept_from=origin)
    return rows, origins


def table(args: argparse.Namespace) -> dict:
    rates = {}
    if args.prior_rates and Path(args.prior_rates).exists():
        rates = {r["task"]: r for r in json.loads(Path(args.prior_rates).read_text())["rows"]}
    config_file = args.runs / f"config_budget{args.budget}.yaml"
    config_values = yaml.safe_load(config_file.read_text()) if config_file.exists() else None
    kept, origins = {}, {}
    for path in args.keep_rows or []:  # the first file that has a (task, method) row wins
        rows_here, origins_here = kept_rows(path, config_values)
        kept = rows_here | kept
        origins |= {o: line for o, line in origins_here.items() if o not in origins}
    rows = []
    for t in args.tasks:
        prior = None
        for m in args.methods:
            row = run_row([run_dir(args.runs, t, m, s) for s in args.seeds])
            if row is None and (t, m) in kept:
                row = dict(kept[(t, m)])
            if row is None:
                continue
            row.update(task=t, method=m)
            if m == "prior":
                prior = row["burden_mean"]
            row["ratio_to_prior"] = row["burden_mean"] / prior if prior and math.isfinite(prior) else None
            # a seed without hits makes the mean infinite: then the pooled evaluations per hit of all seeds
            row["pooled"] = not math.isfinite(row["burden_mean"]) and math.isfinite(row["pooled_evals_per_hit"])
            figure = row["pooled_evals_per_hit"] if row["pooled"] else row["burden_mean"]
            row["ratio_large"], row["ratio_large_is_bound"] = large_sample_ratio(figure, rates.get(t))
            paper = PAPER_BURDEN.get(t, {}).get(m, "n/a")
            row["paper_burden"] = paper if paper != "n/a" else None
            row["paper_burden_over_1000"] = paper is None
            rows.append(row)
    return {
        "machine": f"{platform.machine()} CPU, {args.jobs} runs in parallel, 1 torch thread each",
        "budget": args.budget,
        "config": str(CONFIG.relative_to(ROOT)),
        "overrides": parse_sets(args.set),
        "command": "python benchmarks/rl_tasks.py " + " ".join(sys.argv[1:]),
        "prior_rates": str(Path(args.prior_rates).resolve().relative_to(ROOT)) if rates else None,
        "kept_origins": {o: line for o, line in origins.items() if any(r.get("kept_from") == o for r in rows)},
        "config_values": config_values,
        "rows": rows,
    }


def write_outputs(result: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)
    if args.no_curves:
        return
    from matinvent.report.markdown import write_report

    for t in args.tasks:
        dirs = [
            run_dir(args.runs, t, m, s)
            for m in args.methods
            for s in args.seeds
            if (run_dir(args.runs, t, m, s) / "metrics.csv").exists()
        ]
        if not dirs:
            continue
        tmp = args.runs / f"report_{t}"
        write_report(dirs, tmp, top=5)
        for png in tmp.glob("*.png"):
            shutil.copy(png, RESULTS / f"{args.name}_{t}_{png.name}")


def all_runs(args: argparse.Namespace) -> list[tuple[str, str, int, Path]]:
    """(task, method, seed, run folder) of the selection, seed by seed."""
    return [(t, m, s, run_dir(args.runs, t, m, s)) for s in args.seeds for t in args.tasks for m in args.methods]


def recheck_all(args: argparse.Namespace) -> None:
    """``matinvent recheck --n-max N`` on every finished run that has hits and no recheck.json yet."""
    jobs, names, logs = [], [], []
    for _, _, s, p in all_runs(args):
        if not is_finished(p, args.budget) or (p / "recheck.json").exists():
            continue
        if not json.loads((p / "summary.json").read_text()).get("hits"):
            continue
        cmd = [sys.executable, "-m", "matinvent.cli", "recheck", str(p), "--n-max", str(args.recheck)]
        jobs.append(cmd + ["--seed", str(s), "--threads", "1", "--no-mlip-moduli"])
        names.append(f"recheck {p.name}")
        logs.append(p.parent / f"{p.name}.recheck.log")
    run_all(jobs, names, logs, args.jobs)


def rehull_all(args: argparse.Namespace) -> None:
    """``matinvent recheck RUN --rehull``: every re-checked run's E_hull against the shipped hull again."""
    from matinvent.evaluation.recheck import rehull_run

    done = [p for *_, p in all_runs(args) if (p / "recheck.json").exists()]
    for p in done:
        rehull_run(p)
    print(f"re-hulled {len(done)} rechecks", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=SPO + MPO)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    ap.add_argument("--budget", type=int, default=600)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "rl_bench")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (YAML value)")
    ap.add_argument("--name", default="rl_tasks", help="stem of the result files under benchmarks/results/")
    ap.add_argument("--recheck", type=int, default=0, help="relax and re-score up to N hits per finished run")
    ap.add_argument("--paper", action="store_true", help="budget 3000, seeds 0-4, device cuda, 8 runs at a time")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument(
        "--prior-rates", default=PRIOR_RATES, help="prior_hit_rates.py's JSON for the × prior (large) column"
    )
    ap.add_argument("--no-curves", action="store_true")
    ap.add_argument(
        "--keep-rows",
        type=Path,
        nargs="+",
        help="earlier result JSONs: their (task, method) rows fill the cells with no run folders here (first wins)",
    )
    ap.add_argument("--rehull", action="store_true", help="recompute the rechecks' E_hull against the shipped hull")
    args = ap.parse_args()
    if args.paper:
        args.budget, args.seeds, args.jobs = 3000, [0, 1, 2, 3, 4], 8
        args.set = ["device=cuda", *args.set]
    if args.rehull:
        rehull_all(args)
    elif args.recheck:
        recheck_all(args)
    elif not args.table_only:
        config = run_config(args.runs, args.budget, {"recheck_n": 0, **parse_sets(args.set)})
        todo = [(t, m, s, p) for t, m, s, p in all_runs(args) if not is_finished(p, args.budget)]
        jobs = [command(t, m, s, args.budget, p, config) for t, m, s, p in todo]
        run_all(jobs, [p.name for *_, p in todo], [p.parent / f"{p.name}.log" for *_, p in todo], args.jobs)
    write_outputs(table(args), args)


if __name__ == "__main__":
    main()
