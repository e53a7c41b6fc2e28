"""Why a fine-tuned agent behaves as it does: where along the T steps it left the prior, which
step dominates its gradients, and how the geometry of its crystals moved.

    python benchmarks/rl_diagnostics.py [--run runs/rl_bench/density_matinvent_s0]
                                        [--geometry density_prior_s0 density_matinvent_s0 ...]

1. KL profile: for the ``--n`` most recent replay-buffer trajectories of ``--run``, the KL of the
   final agent to the prior at every reverse step, split by component (F corrector, F predictor,
   lattice L, atom types A), with each component's σ.
2. Gradient profile: at a few steps, the gradient norm of −r·log p and of (λ − r)·KL per
   component (what ``grad_clip`` sees when that step is drawn among the K).
3. Geometry: for the valid crystals of each ``--geometry`` run (folders under ``--runs``), the
   median packing fraction (Σ 4/3·π·r_atomic³ / V) and median nearest-neighbour distance over
   the sum of atomic radii, early (iterations < 5) and late (iterations ≥ 15).

Writes ``benchmarks/results/rl_diagnostics.{json,md}`` and ``rl_diagnostics_kl.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from matinvent.diffusion.schedules import respaced_timesteps
from matinvent.io.run_memory import read_memory
from matinvent.prior.checkpoint import load_prior
from matinvent.prior.likelihood import kl_terms, log_prob_terms
from matinvent.prior.model import CrystalDiffusion
from matinvent.rl.trajectories import CrystalTrajectory, stack_step

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMPONENTS = ("F_corr", "F", "L", "A")


def load_run(run: Path) -> tuple[CrystalDiffusion, CrystalDiffusion, list[CrystalTrajectory], np.ndarray, float, dict]:
    """Prior, final agent, the replay trajectories (oldest first), their rewards, λ and run.json."""
    info = json.loads((run / "run.json").read_text())
    prior = load_prior(info["prior"])
    agent = copy.deepcopy(prior)
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    agent.load_state_dict(state["agent"])
    entries = sorted(json.loads(state["replay"])["entries"], key=lambda e: e["key"])
    trajs = [CrystalTrajectory.load(run / "replay" / f"{e['key']}.safetensors") for e in entries]
    rewards = np.array([e["reward"] for e in entries], dtype=np.float32)
    return prior, agent, trajs, rewards, float(info["config"].get("lam", 1.1)), info


def kl_profile(prior, agent, trajs, ts) -> list[dict]:
    rows = []
    with torch.no_grad():
        for s, t in enumerate(ts):
            tr, batch, num_atoms = stack_step(trajs, s, ts, "cpu")
            p = agent.transition_params(tr, batch, num_atoms)
            q = prior.transition_params(tr, batch, num_atoms)
            kl = kl_terms(p, q, batch, tr.L.shape[0])
            sig = {"F_corr": p.std_F_corr, "F": p.std_F, "L": p.std_L, "A": p.std_A}
            row = {"step": s, "t": int(t)}
            for c in COMPONENTS:
                row[f"kl_{c}"] = float(kl[c].mean()) if c in kl else 0.0
                row[f"std_{c}"] = float(torch.as_tensor(sig[c]).flatten()[0])
            rows.append(row)
    return rows


def grad_profile(prior, agent, trajs, rewards, lam, ts, steps) -> list[dict]:
    params = list(agent.parameters())
    for p in params:
        p.requires_grad_(True)
    r = torch.as_tensor(rewards)

    def norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))

    rows = []
    for s in steps:
        tr, batch, num_atoms = stack_step(trajs, s, ts, "cpu")
        p = agent.transition_params(tr, batch, num_atoms)
        with torch.no_grad():
            q = prior.transition_params(tr, batch, num_atoms)
        lp, kl = log_prob_terms(p, tr, batch, tr.L.shape[0]), kl_terms(p, q, batch, tr.L.shape[0])
        row = {"step": s, "t": int(ts[s])}
        for c in COMPONENTS:
            row[f"grad_pg_{c}"] = norm(-(r * lp[c]).mean()) if c in lp else 0.0
            row[f"grad_kl_{c}"] = norm(((lam - r) * kl[c]).mean()) if c in kl else 0.0
        rows.append(row)
    return rows


def geometry(memory: pd.DataFrame, lo: int, hi: int | None = None) -> dict:
    """Median packing fraction and NN-distance ratio of the valid crystals of iterations [lo, hi)."""
    from pymatgen.core import Structure

    rows = memory[(memory["valid"] == 1) & (memory["failed"] == 0) & (memory["iteration"] >= lo)]
    if hi is not None:
        rows = rows[rows["iteration"] < hi]
    packing, ratio = [], []
    for cif in rows["cif"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(cif, fmt="cif")
        rad = np.array([float(site.specie.atomic_radius or 1.5) for site in s])
        packing.append(float((4 / 3 * np.pi * rad**3).sum() / s.volume))
        if len(s) > 1:
            d = s.distance_matrix + np.eye(len(s)) * 1e9
            ratio.append(float((d / (rad[:, None] + rad[None, :])).min()))
    return {
        "iterations": f"{lo}-{hi - 1}" if hi is not None else f">= {lo}",
        "n": len(rows),
        "packing_median": float(np.median(packing)) if packing else float("nan"),
        "nn_ratio_median": float(np.median(ratio)) if ratio else float("nan"),
    }


def plot_kl(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    t = [r["t"] for r in rows]
    for c in COMPONENTS:
        ax.plot(t, [max(r[f"kl_{c}"], 1e-8) for r in rows], label=c)
    ax.set(xlabel="diffusion time t (reverse steps run right to left)", ylabel="KL(agent ‖ prior) per crystal")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "rl_bench")
    ap.add_argument("--run", default="density_matinvent_s0", help="run folder (under --runs) for the KL and gradients")
    ap.add_argument("--n", type=int, default=8, help="most recent replay trajectories to use")
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 1, 50, 90, 97, 98])
    ap.add_argument("--geometry", nargs="*", default=[], help="run folders (under --runs) for the geometry table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    run = args.runs / args.run
    prior, agent, trajs, rewards, lam, info = load_run(run)
    trajs, rewards = trajs[-args.n :], rewards[-args.n :]
    ts = respaced_timesteps(prior.config.timesteps, info["config"].get("sample_steps") or prior.config.sample_steps)
    kl = kl_profile(prior, agent, trajs, ts)
    grads = grad_profile(prior, agent, trajs, rewards, lam, ts, [s for s in args.steps if s < len(ts)])
    mems = {name: read_memory(args.runs / name) for name in args.geometry}
    geo = {name: [geometry(mem, 0, 5), geometry(mem, 15)] for name, mem in mems.items()}

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "run": args.run,
        "trajectories": len(trajs),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, 1 thread",
        "kl_profile": kl,
        "grad_profile": grads,
        "geometry": geo,
    }
    (RESULTS / "rl_diagnostics.json").write_text(json.dumps(out, indent=1))
    title = f"{args.run}: final agent vs prior, {len(trajs)} replay trajectories"
    plot_kl(kl, RESULTS / "rl_diagnostics_kl.png", title)

    lines = [f"Run `{args.run}`, final agent, its {len(trajs)} most recent replay trajectories.", ""]
    top = sorted(kl, key=lambda r: -sum(r[f"kl_{c}"] for c in COMPONENTS))[:5]
    lines += ["Steps with the largest KL(agent ‖ prior) per crystal:", ""]
    lines += ["| step | t | KL F_corr | KL F | KL L | KL A | σ_L |", "|---|---|---|---|---|---|---|"]
    for r in top:
        kls = " | ".join(f"{r[f'kl_{c}']:.3g}" for c in COMPONENTS)
        lines.append(f"| {r['step']} | {r['t']} | {kls} | {r['std_L']:.3g} |")
    total = {c: sum(r[f"kl_{c}"] for r in kl) for c in COMPONENTS}
    lines += ["", "KL summed over all steps: " + ", ".join(f"{c} {v:.3g}" for c, v in total.items()), ""]
    lines += ["Gradient norms (before clipping) when a step is drawn:", ""]
    head = " | ".join(f"PG {c}" for c in COMPONENTS) + " | " + " | ".join(f"KL {c}" for c in COMPONENTS)
    lines += [f"| step | t | {head} |", "|---|---|" + "---|" * 8]
    for r in grads:
        vals = [r[f"grad_pg_{c}"] for c in COMPONENTS] + [r[f"grad_kl_{c}"] for c in COMPONENTS]
        lines.append(f"| {r['step']} | {r['t']} | " + " | ".join(f"{v:.3g}" for v in vals) + " |")
    if geo:
        lines += ["", "Geometry of the valid crystals (medians):", ""]
        lines += ["| run | iterations | crystals | packing fraction | NN distance / (r_i + r_j) |"]
        lines += ["|---|---|---|---|---|"]
        for name, parts in geo.items():
            for g in parts:
                cells = [name, g["iterations"], g["n"], f"{g['packing_median']:.3f}", f"{g['nn_ratio_median']:.3f}"]
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "rl_diagnostics.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
