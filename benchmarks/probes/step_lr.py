"""#10 probe: physical validity vs corrector step_lr and sampler steps (200 samples, seed 3)."""

import json
import time

import torch

from matinvent.crystal.validity import gate_flags
from matinvent.prior.checkpoint import load_prior

torch.set_num_threads(1)
res = []
for steps, lr in [(100, 1e-5), (100, 3e-5), (100, 1e-4), (100, 3e-4), (50, 1e-5), (25, 1e-5)]:
    m = load_prior("src/matinvent/checkpoints/mp20_masked")
    m.config.step_lr = lr
    g = torch.Generator().manual_seed(3)
    t0 = time.time()
    out = []
    for _ in range(4):
        out += m.sample(50, generator=g, steps=steps).final.to_crystals(strict=False)
    dt = time.time() - t0
    phys = gate_flags(out, "physical")[0].mean()
    comp = gate_flags(out, "physical+composition")[0].mean()
    nel = sum(len(set(c.Z.tolist())) > 5 for c in out if c is not None) / len(out)
    r = dict(steps=steps, step_lr=lr, physical=float(phys), phys_comp=float(comp), over5=nel, s_per_crystal=dt / 200)
    print(r, flush=True)
    res.append(r)
json.dump(res, open("runs/sweep/step_lr.json", "w"), indent=1)
