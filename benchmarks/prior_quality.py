"""Prior quality side by side: `sample` + `evaluate` (with --stability) of several priors (issue 32).

For each prior: ``matinvent sample --n N --seed 0 --steps S`` then ``matinvent evaluate DIR --reference
val.csv.gz --stability --stability-n M --training train_partial.csv.gz``; the gate pass rate of
``optimize`` (physical + SMACT, the loop's default gate) is read off the same samples.

    python benchmarks/prior_quality.py                                # both priors, 1,000 samples, 25 steps
    python benchmarks/prior_quality.py --n 20 --stability-n 4 --name prior_quality_smoke
    python benchmarks/prior_quality.py --priors masked=mp20_masked masked_max5=mp20_masked@5  # + --max-elements 5

A prior spec is ``label=path`` (or a bundled name), optionally ``@K``: sample it with ``--max-elements K``.
A prior saved from a constrained run samples under its own constraints anyway (``trained_under_constraints``).

Writes ``benchmarks/results/<name>.json`` and ``.md``; samples under ``runs/prior_quality/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from result_files import stamp, write

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mp_20"

ROWS = [  # (label, key in evaluation.json, how to show it)
    ("gate pass in optimize (physical + SMACT)", "gate_pass", "pct"),
    ("physical validity", "physical_validity", "pct"),
    ("SMACT validity", "composition_validity", "pct"),
    ("uniqueness", "uniqueness", "pct"),
    ("novelty vs val", "novelty", "pct"),
    ("> 5 elements", "frac_over_5_elements", "pct"),
    ("single-element crystals", "frac_single_element", "pct"),
    ("binaries", "frac_binary", "pct"),
    ("W-distance #elements", "wdist_num_elements", "f3"),
    ("W-distance density (g/cm³)", "wdist_density", "f3"),
    ("element-frequency distance to val (TV)", "element_freq_distance", "f3"),
    ("median RMSD generated → relaxed (Å)", "stability.median_rmsd", "f3"),
    ("mean RMSD (Å)", "stability.mean_rmsd", "f3"),
    ("E_hull ≤ 0.1 eV/atom (relaxed)", "stability.frac_stable_0.1", "pct"),
    ("S.U.N. rate (≤ 0.1, novel vs train)", "stability.sun_rate", "pct"),
    ("median E_hull (eV/atom)", "stability.median_e_above_hull", "f3"),
    ("relaxations stopped by the step / time bound", "stability.n_unconverged", "int"),
    ("of which by the time bound", "stability.n_time_limit", "int"),
]


def get(ev: dict, key: str):
    if key.startswith("stability."):
        return (ev.get("stability") or {}).get(key.removeprefix("stability."))
    return ev.get(key)


def show(value, how: str) -> str:
    if value is None:
        return "–"
    if how == "int":
        return str(int(value))
    return f"{100 * value:.1f} %" if how == "pct" else f"{value:.3f}"


def gate_pass(folder: Path) -> float:
    from matinvent.crystal.validity import gate_flags
    from matinvent.io.sample_folder import read_sample_folder

    crystals = read_sample_folder(folder).crystals
    structures = [c.to_structure() if c is not None else None for c in crystals]
    valid, _ = gate_flags(structures, "physical+composition")
    return float(sum(bool(v) for v in valid) / max(1, len(crystals)))


def run(cmd: list[str], log: Path) -> None:
    print(" ".join(cmd), flush=True)
    with open(log, "a") as fh:
        subprocess.run([sys.executable, "-m", "matinvent.cli", *cmd], check=True, stdout=fh, stderr=subprocess.STDOUT)


def measure(label: str, prior: str, args: argparse.Namespace, work: Path) -> dict:
    folder = work / label
    prior, _, cap = prior.partition("@")
    t0 = time.time()
    if not (folder / "evaluation.json").exists():
        run(
            ["sample", "--n", str(args.n), "--seed", "0", "--steps", str(args.steps), "--checkpoint", prior,
             "--out", str(folder), "--overwrite", "--threads", str(args.threads)]
            + (["--max-elements", cap] if cap else []),
            work / "log.txt",
        )  # fmt: skip
        run(
            ["evaluate", str(folder), "--reference", str(DATA / "val.csv.gz"), "--stability", "--stability-n",
             str(args.stability_n), "--training", str(DATA / "train_partial.csv.gz")],
            work / "log.txt",
        )  # fmt: skip
    ev = json.loads((folder / "evaluation.json").read_text())
    ev["gate_pass"] = gate_pass(folder)
    ev["wall_s"] = round(time.time() - t0, 1)
    return {"label": label, "prior": prior, "max_elements": int(cap) if cap else None, "evaluation": ev}


def markdown(result: dict) -> str:
    priors = result["priors"]
    lines = [
        f"# Prior quality, {result['n']} samples, {result['steps']} sampler steps ({result['date']})",
        "",
        f"`{result['command']}` on {result['machine']}; reference `val.csv.gz`; stability on "
        f"{result['stability_n']} physically valid crystals (SevenNet-0, batched FIRE, shipped MP-20 hull).",
        "",
        "| metric | " + " | ".join(f"`{p['label']}`" for p in priors) + " |",
        "|---|" + "---|" * len(priors),
    ]
    for label, key, how in ROWS:
        lines.append(f"| {label} | " + " | ".join(show(get(p["evaluation"], key), how) for p in priors) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", nargs="+", default=["mp20_masked", "mp20_aligned"], help="label=path or bundled name")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=25, help="sampler steps (optimize's MDP: 25)")
    ap.add_argument("--stability-n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="prior_quality_aligned")
    args = ap.parse_args()
    work = ROOT / "runs" / "prior_quality" / args.name
    work.mkdir(parents=True, exist_ok=True)
    priors = []
    for spec in args.priors:
        label, _, path = spec.partition("=")
        priors.append(measure(label, path or label, args, work))
    result = {"n": args.n, "steps": args.steps, "stability_n": args.stability_n, "priors": priors, **stamp()}
    write(args.name, result, markdown(result))


if __name__ == "__main__":
    main()
