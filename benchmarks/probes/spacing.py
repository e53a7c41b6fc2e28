"""#11 probe: physical validity vs sampler spacing at few steps (200 samples, seed 3)."""

import json
import time

import torch

import matinvent.prior.model as cd
from matinvent.crystal.validity import gate_flags
from matinvent.prior.checkpoint import load_prior

torch.set_num_threads(1)


def spaced(power):
    def f(T, steps):
        x = torch.linspace(1, 0, steps, dtype=torch.float64) ** power
        ts = (1 + (T - 1) * x).round().long().tolist()
        return sorted(set(ts), reverse=True)

    return f


res = []
for steps, power in [(25, 2.0), (50, 2.0), (25, 0.7), (25, 0.5)]:
    cd.respaced_timesteps = spaced(power)
    m = load_prior("src/matinvent/checkpoints/mp20_masked")
    g = torch.Generator().manual_seed(3)
    t0 = time.time()
    out = []
    for _ in range(4):
        out += m.sample(50, generator=g, steps=steps).final.to_crystals(strict=False)
    dt = time.time() - t0
    phys = gate_flags(out, "physical")[0].mean()
    comp = gate_flags(out, "physical+composition")[0].mean()
    nel = sum(len(set(c.Z.tolist())) > 5 for c in out if c is not None) / len(out)
    r = dict(steps=steps, power=power, physical=float(phys), phys_comp=float(comp), over5=nel, s_per_crystal=dt / 200)
    print(r, flush=True)
    res.append(r)
json.dump(res, open("runs/sweep/spacing.json", "w"), indent=1)
