"""How much relaxation the loop needs: hits that survive an independent relaxation vs the loop's cost.

Generated crystals of the bundled prior that pass the loop's gate (``physical+composition``) are
relaxed with SevenNet-0 (batched, FIRE + Fréchet cell filter) at several budgets (fmax, step
limit), and once more with CHGNet to tight settings as the independent reference. For each task
and budget the loop's hits are the crystals that are a hit on the SevenNet-relaxed structure *and*
lie within 0.1 eV/atom of the shipped hull by SevenNet's energy (the default hit definition); a hit
*survives* when it is still a hit on the CHGNet-relaxed structure with CHGNet's E_hull ≤ 0.1.
Budget 0 is the raw pipeline (properties of the generated structure; its E_hull from one SevenNet
single point, an upper bound of the relaxed value).

    python benchmarks/relax_budget.py                     # 64 crystals, ~15 min on 2 cores
    python benchmarks/relax_budget.py --n 6 --name relax_budget_smoke

Writes ``benchmarks/results/<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("density", "band_gap", "formation_energy", "hhi")
BUDGETS = ((0.05, 50), (0.05, 100), (0.05, 200))  # (fmax eV/Å, FIRE step limit) of the loop
REFERENCE = ("chgnet", 0.05, 500)
STABLE = 0.1  # eV/atom
MAX_SECONDS = 7200.0  # no time cap inside the comparison: every row runs to its step limit


def generated(n: int, seed: int) -> list:
    import matinvent as mi
    from matinvent.crystal.record import Crystal
    from matinvent.crystal.validity import gate_flags

    prior = mi.load_prior("mp20_masked")
    out: list = []
    batch = 0
    while len(out) < n:
        structures = [s for s in prior.sample(4 * n, seed=seed + batch, steps=25) if s is not None]
        valid = gate_flags([Crystal.from_structure(s) for s in structures], "physical+composition")[0]
        out += [s for s, v in zip(structures, valid, strict=True) if v]
        batch += 1
    return out[:n]


def properties(structures: list, e_form: np.ndarray, hull_energy: np.ndarray) -> dict[str, np.ndarray]:
    """Task properties of ``structures`` (None: failed): the MLIP's formation energy, the rest by the task oracles."""
    from matinvent.oracles import get_oracle

    ok = [i for i, s in enumerate(structures) if s is not None]
    values = {p: np.full(len(structures), np.nan) for p in ("density", "band_gap", "hhi")}
    for p in values:
        values[p][ok] = get_oracle(p)([structures[i] for i in ok])
    values["formation_energy"] = e_form
    values["e_above_hull"] = hull_energy
    return values


def relaxed_values(structures: list, model: str, fmax: float, steps: int) -> tuple[dict, float, dict]:
    """Properties after relaxing with ``model`` (steps 0: no relaxation, single point), seconds, relaxation stats."""
    from matinvent.oracles.mlip.batched import BatchedRelaxer
    from matinvent.oracles.mlip.relax import MLIPRelaxer
    from matinvent.oracles.mlip.relaxed import Relaxed

    t0 = time.perf_counter()
    if steps == 0:
        relaxer = MLIPRelaxer(model=model, max_steps=1)
        points = BatchedRelaxer(model=model).single_points(structures)
        records = [
            Relaxed(s if p.reason == "" else None, p.energy_per_atom, True, 0)
            for s, p in zip(structures, points, strict=True)
        ]
        for s, r in zip(structures, records, strict=True):
            relaxer._cache[_key(s)] = r  # the unrelaxed structure, as if relaxed in 0 steps
        done = [r.structure for r in records]
        stats = {"converged": 0, "failed": sum(r.structure is None for r in records), "steps_mean": 0.0}
    else:
        relaxer = MLIPRelaxer(model=model, fmax=fmax, max_steps=steps, engine="batched")
        relaxer._batched = BatchedRelaxer(model=model, fmax=fmax, max_steps=steps, max_seconds=MAX_SECONDS)
        records = relaxer.relax(structures)
        done = [r.structure if r.ok else None for r in records]
        stats = {
            "converged": sum(r.converged for r in records),
            "failed": sum(not r.ok for r in records),
            "steps_mean": float(np.mean([r.steps for r in records])),
        }
    seconds = time.perf_counter() - t0
    e_form = relaxer.formation_energy(structures)
    e_hull = relaxer.e_above_hull(structures)
    values = properties(done, e_form, e_hull)
    return values, seconds, stats


def _key(structure) -> str:
    from matinvent.crystal.structure_hash import structure_key

    return structure_key(structure)


def loop_hits(task, values: dict) -> np.ndarray:
    _, hit, _ = task.rewards({p: values[p] for p in task.properties})
    return hit & (values["e_above_hull"] <= STABLE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="relax_budget")
    args = ap.parse_args()
    import torch

    import matinvent as mi

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    structures = generated(args.n, args.seed)
    tasks = {t: mi.load_task(t) for t in TASKS}
    model, fmax, steps = REFERENCE
    ref, ref_s, ref_stats = relaxed_values(structures, model, fmax, steps)
    ref_hits = {t: loop_hits(task, ref) for t, task in tasks.items()}
    print(f"reference {REFERENCE}: {ref_s:.1f} s, {ref_stats}", flush=True)
    rows = []
    for fmax, steps in ((0.05, 0), *BUDGETS):
        got, seconds, stats = relaxed_values(structures, "sevennet-0", fmax, steps)
        row = {
            "fmax": fmax,
            "max_steps": steps,
            "seconds": round(seconds, 1),
            "s_per_crystal": round(seconds / len(structures), 3),
            **stats,
        }
        pooled_hits = pooled_survive = 0
        for t, task in tasks.items():
            hits = loop_hits(task, got)
            survive = hits & ref_hits[t]
            row[f"{t}_hits"] = int(hits.sum())
            row[f"{t}_survive"] = int(survive.sum())
            pooled_hits += int(hits.sum())
            pooled_survive += int(survive.sum())
        row["hits_pooled"] = pooled_hits
        row["survival_pooled"] = round(pooled_survive / pooled_hits, 3) if pooled_hits else None
        stable = got["e_above_hull"] <= STABLE
        row["stable"] = int(stable.sum())
        row["stable_agree"] = round(float(np.mean(stable == (ref["e_above_hull"] <= STABLE))), 3)
        for p in ("density", "band_gap", "formation_energy"):
            both = np.isfinite(got[p]) & np.isfinite(ref[p])
            row[f"{p}_median_abs_diff"] = (
                round(float(np.median(np.abs(got[p][both] - ref[p][both]))), 4) if both.any() else None
            )
        rows.append(row)
        print(row, flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "command": "python benchmarks/relax_budget.py " + " ".join(sys.argv[1:]),
        "n": len(structures),
        "seed": args.seed,
        "reference": {
            "model": REFERENCE[0],
            "fmax": REFERENCE[1],
            "max_steps": REFERENCE[2],
            "seconds": round(ref_s, 1),
            **ref_stats,
            **{f"{t}_hits": int(h.sum()) for t, h in ref_hits.items()},
        },
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    r = result["reference"]
    lines = [
        f"# Relaxation budget of the loop: survival vs cost ({result['date']})",
        "",
        f"{result['n']} generated crystals (mp20_masked, gate physical+composition, seed {result['seed']}); "
        f"{result['machine']}. Loop: SevenNet-0, batched FIRE + Fréchet filter. Reference: {r['model']}, "
        f"fmax {r['fmax']}, ≤ {r['max_steps']} steps ({r['seconds']} s, {r['converged']} converged). "
        f"Hit = task hit and E_hull ≤ {STABLE} eV/atom; survives = the same on the reference. "
        f"Command: `{result['command']}`",
        "",
        "| fmax | steps | s / crystal | converged | "
        + " | ".join(f"{t} hits (survive)" for t in TASKS)
        + " | pooled survival | E_hull ≤ 0.1 (agree) | median \\|Δ\\| density / gap / E_form |",
        "|---|---|---|---|" + "---|" * len(TASKS) + "---|---|---|",
    ]
    for row in result["rows"]:
        cells = [row["fmax"], row["max_steps"] or "0 (raw)", row["s_per_crystal"], row["converged"]]
        cells += [f"{row[f'{t}_hits']} ({row[f'{t}_survive']})" for t in TASKS]
        cells += [row["survival_pooled"], f"{row['stable']} ({row['stable_agree']})"]
        cells.append(" / ".join(str(row[f"{p}_median_abs_diff"]) for p in ("density", "band_gap", "formation_energy")))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
