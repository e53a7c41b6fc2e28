"""Batched MLIP relaxation (torch-sim) against today's one-at-a-time ASE path: crystals/s and final energies.

Two sets at equal settings (SevenNet-0, FIRE on positions + cell through the Fréchet filter, the
same fmax and step limit): MP-20 validation crystals as stored, and generated crystals of the
bundled prior that pass the physical validity gate. Per set it reports the wall time and
crystals/s of each path, the speed-up, how many converged, and |ΔE| (eV/atom) between the two
paths' final energies on the crystals both converged.

    python benchmarks/relax_speed.py                       # 20 MP-20 + 32 generated, fmax 0.05
    python benchmarks/relax_speed.py --n-mp20 4 --n-generated 4 --name relax_speed_smoke

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
MP20_VAL = ROOT.parent / "shared" / "data" / "mp_20" / "val.csv.gz"


def mp20_structures(n: int) -> list:
    from matinvent.io.cdvae_csv import read_cdvae_csv

    table = read_cdvae_csv(MP20_VAL, max_atoms=20)
    return [c.to_structure() for c in table.crystals if c is not None][:n]


def generated_structures(n: int, seed: int) -> list:
    import matinvent as mi
    from matinvent.crystal.record import Crystal
    from matinvent.crystal.validity import physically_valid

    prior = mi.load_prior("mp20_masked")
    out: list = []
    batch = 0
    while len(out) < n:
        for s in prior.sample(4 * n, seed=seed + batch, steps=25):
            if s is not None and physically_valid(Crystal.from_structure(s)):
                out.append(s)
        batch += 1
    return out[:n]


def time_paths(structures: list, fmax: float, max_steps: int, atoms_in_flight: int) -> dict:
    from matinvent.oracles.mlip.batched import BatchedRelaxer
    from matinvent.oracles.mlip.relax import MLIPRelaxer

    batched = BatchedRelaxer(fmax=fmax, max_steps=max_steps, atoms_in_flight=atoms_in_flight, max_seconds=3600.0)
    one = MLIPRelaxer(fmax=fmax, max_steps=max_steps)
    batched.single_points(structures[:1])  # load the model outside the timing
    one.relax([structures[0].copy()])
    t0 = time.perf_counter()
    got = batched.relax(structures)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [one.relax([s.copy()])[0] for s in structures]  # today's path: one structure at a time
    t_ase = time.perf_counter() - t0
    both = [(g, r) for g, r in zip(got, ref, strict=True) if g.converged and r.converged]
    de = np.array([abs(g.energy_per_atom - r.energy_per_atom) for g, r in both])
    return {
        "n": len(structures),
        "atoms": int(sum(len(s) for s in structures)),
        "batched_s": round(t_batched, 2),
        "per_structure_s": round(t_ase, 2),
        "batched_per_s": round(len(structures) / t_batched, 4),
        "per_structure_per_s": round(len(structures) / t_ase, 4),
        "speedup": round(t_ase / t_batched, 2),
        "batched_converged": sum(g.converged for g in got),
        "per_structure_converged": sum(r.converged for r in ref),
        "batched_failed": sum(not g.ok for g in got),
        "per_structure_failed": sum(not r.ok for r in ref),
        "both_converged": len(both),
        "max_abs_de_ev_atom": float(de.max()) if len(de) else None,
        "median_abs_de_ev_atom": float(np.median(de)) if len(de) else None,
        "within_5mev": int((de <= 0.005).sum()),
        "batched_steps_mean": float(np.mean([g.steps for g in got])),
        "per_structure_steps_mean": float(np.mean([r.steps for r in ref])),
    }


def time_single_points(structures: list, atoms_in_flight: int) -> dict:
    """Batched single points (energy, forces, stress) against the ASE calculator one structure at a time."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from matinvent.oracles.mlip.batched import BatchedRelaxer
    from matinvent.oracles.mlip.calculators import load_calculator

    batched = BatchedRelaxer(atoms_in_flight=atoms_in_flight)
    calc = load_calculator("sevennet-0")
    batched.single_points(structures[:1])  # load both models outside the timing
    t0 = time.perf_counter()
    got = batched.single_points(structures)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = []
    for s in structures:
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        ref.append(atoms.get_potential_energy() / len(atoms))
        atoms.get_forces(), atoms.get_stress()
    t_ase = time.perf_counter() - t0
    de = np.array([abs(g.energy_per_atom - r) for g, r in zip(got, ref, strict=True) if np.isfinite(g.energy_per_atom)])
    return {
        "n": len(structures),
        "batched_per_s": round(len(structures) / t_batched, 2),
        "per_structure_per_s": round(len(structures) / t_ase, 2),
        "speedup": round(t_ase / t_batched, 2),
        "max_abs_de_ev_atom": float(de.max()) if len(de) else None,
    }


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"# Batched vs one-at-a-time MLIP relaxation ({result['date']})",
        "",
        f"SevenNet-0, FIRE + Fréchet cell filter, fmax {s['fmax']} eV/Å, ≤ {s['max_steps']} steps, "
        f"≤ {s['atoms_in_flight']} atoms in flight; {result['machine']}. "
        f"Command: `{result['command']}`",
        "",
        "| set | n | atoms | batched s | one-at-a-time s | crystals/s batched | crystals/s one-at-a-time | speed-up "
        "| converged (batched / one) | failed (batched / one) | both converged: max / median |ΔE| (meV/atom) "
        "| within 5 meV/atom |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["sets"].items():
        de = (
            f"{1000 * r['max_abs_de_ev_atom']:.2f} / {1000 * r['median_abs_de_ev_atom']:.2f}"
            if r["both_converged"]
            else "–"
        )
        cells = [
            name, r["n"], r["atoms"], r["batched_s"], r["per_structure_s"], r["batched_per_s"],
            r["per_structure_per_s"], f"{r['speedup']}×", f"{r['batched_converged']} / {r['per_structure_converged']}",
            f"{r['batched_failed']} / {r['per_structure_failed']}", de, f"{r['within_5mev']} of {r['both_converged']}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if result.get("single_points"):
        lines += [
            "",
            "Single points (energy + forces + stress of the structure as given; the stability reward's cost):",
            "",
            "| set | n | crystals/s batched | crystals/s one-at-a-time (ASE) | speed-up | max |ΔE| (meV/atom) |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in result["single_points"].items():
            de = "–" if r["max_abs_de_ev_atom"] is None else f"{1000 * r['max_abs_de_ev_atom']:.3f}"
            lines.append(
                f"| {name} | {r['n']} | {r['batched_per_s']} | {r['per_structure_per_s']} | {r['speedup']}× | {de} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-mp20", type=int, default=20)
    ap.add_argument("--n-generated", type=int, default=32)
    ap.add_argument("--fmax", type=float, default=0.05)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--atoms-in-flight", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="relax_speed")
    ap.add_argument("--single-points-only", action="store_true", help="time only the single points (fast)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    sets = {}
    if args.n_mp20:
        sets["MP-20 val (as stored)"] = mp20_structures(args.n_mp20)
    if args.n_generated:
        sets["generated (mp20_masked, physically valid)"] = generated_structures(args.n_generated, args.seed)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "command": "python benchmarks/relax_speed.py " + " ".join(sys.argv[1:]),
        "settings": {k: getattr(args, k) for k in ("fmax", "max_steps", "atoms_in_flight", "threads", "seed")},
        "sets": {},
    }
    result["single_points"] = {}
    for name, structures in sets.items():
        result["single_points"][name] = time_single_points(structures, args.atoms_in_flight)
        print(name, "single points", result["single_points"][name], flush=True)
        if not args.single_points_only:
            result["sets"][name] = time_paths(structures, args.fmax, args.max_steps, args.atoms_in_flight)
            print(name, result["sets"][name], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
