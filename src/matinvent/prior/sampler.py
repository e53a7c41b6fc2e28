"""The predictor–corrector sampler of the crystal diffusion, out of the model class (as a scheduler is).

One reverse step M_t → M_{t_prev} is two Gaussian sub-steps:

1. corrector:  F_mid ~ N_W(F_t + δ_t ŝ(M_t), 2δ_t),           δ_t = step_lr (σ_t/σ_1)²
2. predictor:  F_{t_prev} ~ N_W(F_mid + (σ_t² − σ_prev²) ŝ(M_mid), σ_prev²(σ_t² − σ_prev²)/σ_t²),
               L_{t_prev}, A_{t_prev} ~ N(DDPM mean from ε̂(M_mid), posterior std),
   with M_mid = (A_t, F_mid, L_t) and both network calls at time t. With masked types, A_{t_prev}
   instead decides each masked atom with probability u_t, its element drawn from p̂(x_0).

:func:`corrector_params` and :func:`predictor_params` give the means and standard deviations of
the two sub-steps under a model (a :class:`~matinvent.prior.model.CrystalDiffusion`);
:func:`transition_params` recomputes them for a stored transition (differentiable; the RL loss and
:mod:`matinvent.prior.likelihood` use it); :func:`sample` runs the chain; :func:`sample_crystals`
draws crystals in batches with a progress bar, optionally under chemical-space constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm import tqdm

from matinvent.crystal.batch import CrystalBatch, batch_index
from matinvent.crystal.constraints import ChemConstraints
from matinvent.crystal.record import Crystal
from matinvent.diffusion import respaced_timesteps, wrap
from matinvent.prior import masked_types as mt
from matinvent.prior.transitions import Trajectory, Transition, TransitionParams


def corrector_params(model: nn.Module, A, F, L, t: int, batch, num_atoms) -> tuple[torch.Tensor, float]:
    """Langevin corrector at noise level σ_t: mean and std of F_mid."""
    _, F_out, _ = model.denoise_at(A, F, L, t, batch, num_atoms)
    return corrector_from(model, F, F_out, t)


def corrector_from(model: nn.Module, F, F_out, t: int) -> tuple[torch.Tensor, float]:
    """The corrector's mean and std of F_mid from the network's coordinate output ``F_out`` at (F, t)."""
    sig_t = float(model.sigma.sigmas[t])
    step = model.config.step_lr * (sig_t / model.config.sigma_begin) ** 2
    return F + step * model.score_estimate(F_out, t), (2.0 * step) ** 0.5


def predictor_params(model: nn.Module, A, F_mid, L, t: int, t_prev: int, batch, num_atoms):
    """Reverse-SDE predictor on F and ancestral DDPM steps on L and A, from M_mid at time t."""
    out = model.denoise_at(A, F_mid, L, t, batch, num_atoms, return_type_logits=True)
    return predictor_from(model, A, F_mid, L, t, t_prev, out)


def predictor_from(model: nn.Module, A, F_mid, L, t: int, t_prev: int, out):
    """The predictor's means and stds from the network's outputs ``out`` = (ε̂_L, ŝ_F, ε̂_A, type logits) at M_mid."""
    eps_L, F_out, eps_A, log_p0 = out
    sig_t = float(model.sigma.sigmas[t])
    sig_prev = float(model.sigma.sigmas[t_prev])
    step = sig_t**2 - sig_prev**2
    std_F = (sig_prev**2 * step / sig_t**2) ** 0.5
    ddpm = model.beta.step(t, t_prev)
    if model.masked_types:
        types = {
            "logp_A": log_p0,
            "masked_A": mt.is_masked(A, model.n_types),
            "unmask_A": model.absorbing.unmask_prob(t, t_prev),
        }
    else:
        types = {"mean_A": ddpm.mean(A, eps_A, clip=model.config.clip_types), "std_A": ddpm.std}
    return (
        F_mid + step * model.score_estimate(F_out, t),
        std_F,
        ddpm.mean(L, eps_L, clip=model.config.clip_lattice),
        ddpm.std,
        types,
    )


def transition_params(model: nn.Module, tr: Transition, batch, num_atoms) -> TransitionParams:
    """Recompute a stored transition's means/stds under this model (differentiable)."""
    mean_c, std_c = corrector_params(model, tr.A, tr.F, tr.L, tr.t, batch, num_atoms)
    *pred, types = predictor_params(model, tr.A, tr.F_mid, tr.L, tr.t, tr.t_prev, batch, num_atoms)
    return _assemble(model, tr, batch, num_atoms, (mean_c, std_c), pred, types)


def _assemble(model: nn.Module, tr: Transition, batch, num_atoms, corr, pred, types) -> TransitionParams:
    if model.masked_types and model.constraint is not None:
        types["allowed_A"] = model.constraint.step_masks(tr.A, tr.A_next, batch, num_atoms, model.n_types)
    return TransitionParams(*corr, *pred, **types)


def transition_params_many(model: nn.Module, trs: list[Transition], batch, num_atoms) -> list[TransitionParams]:
    """:func:`transition_params` of several stored transitions of the same crystals (``batch``, ``num_atoms``),
    from ONE network call: the 2·len(``trs``) inputs (corrector at M_t, predictor at M_mid, each at its own t)
    are stacked along the batch. The same parameters as one call per transition, up to float rounding."""
    if not trs:
        return []
    B, N, k = len(num_atoms), len(batch), len(trs)
    inputs = [(tr.A, tr.F, tr.L, tr.t) for tr in trs] + [(tr.A, tr.F_mid, tr.L, tr.t) for tr in trs]
    A = torch.cat([x[0] for x in inputs])
    F = torch.cat([x[1] for x in inputs])
    L = torch.cat([x[2] for x in inputs])
    t = torch.tensor([x[3] for x in inputs], device=L.device, dtype=torch.long).repeat_interleave(B)
    offsets = torch.arange(2 * k, device=batch.device).repeat_interleave(N) * B
    big_batch = batch.repeat(2 * k) + offsets
    out = model.predict(A, F, L, t, big_batch, num_atoms.repeat(2 * k), return_type_logits=True)
    params = []
    for j, tr in enumerate(trs):
        atoms, cells = slice((k + j) * N, (k + j + 1) * N), slice((k + j) * B, (k + j + 1) * B)
        corr = corrector_from(model, tr.F, out[1][j * N : (j + 1) * N], tr.t)
        mid = (out[0][cells], out[1][atoms], out[2][atoms], None if out[3] is None else out[3][atoms])
        *pred, types = predictor_from(model, tr.A, tr.F_mid, tr.L, tr.t, tr.t_prev, mid)
        params.append(_assemble(model, tr, batch, num_atoms, corr, pred, types))
    return params


@torch.no_grad()
def sample(
    model: nn.Module,
    n: int,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    num_atoms: torch.Tensor | None = None,
    return_trajectory: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Trajectory:
    """Draw ``n`` crystals. ``steps`` < T respaces the sampler (default: ``config.sample_steps``,
    or all T when that is unset); noise comes from ``generator``.

    With ``return_trajectory`` every ``Transition`` is kept (states, actions, parameters).
    ``progress`` is called with 1 after each reverse step.
    """
    dev = model.sigma_norm.device
    dtype = next(model.parameters()).dtype
    if num_atoms is None:
        num_atoms = model.sample_num_atoms(n, generator)
    elif model.constraint is not None:
        model.constraint.check_natoms(num_atoms)
    num_atoms = num_atoms.to(dev)
    batch = batch_index(num_atoms)
    N = int(num_atoms.sum())

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype).to(dev)

    L = randn(n, 3, 3)
    A = mt.all_masked(N, model.n_types, dtype, dev) if model.masked_types else randn(N, model.n_types)
    F = torch.rand(N, 3, generator=generator, dtype=dtype).to(dev)
    traj = Trajectory(num_atoms=num_atoms, batch=batch)
    ts = respaced_timesteps(model.config.timesteps, steps or model.config.sample_steps)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else 0
        mean_c, std_c = corrector_params(model, A, F, L, t, batch, num_atoms)
        F_mid = wrap(mean_c + std_c * randn(N, 3))
        mean_F, std_F, mean_L, std_L, types = predictor_params(model, A, F_mid, L, t, t_prev, batch, num_atoms)
        F_next = wrap(mean_F + std_F * randn(N, 3))
        L_next = mean_L + std_L * randn(n, 3, 3)
        if model.masked_types and model.constraint is not None:
            args = (A, types["logp_A"], types["unmask_A"], model.n_types, batch, num_atoms, generator)
            A_next, types["allowed_A"] = model.constraint.sample_step(*args)
        elif model.masked_types:
            A_next = mt.sample_step(A, types["logp_A"], types["unmask_A"], model.n_types, generator)
        else:
            A_next = types["mean_A"] + types["std_A"] * randn(N, model.n_types)
        if return_trajectory:
            params = TransitionParams(mean_c, std_c, mean_F, std_F, mean_L, std_L, **types)
            traj.transitions.append(Transition(t, t_prev, A, F, L, F_mid, A_next, F_next, L_next, params))
        A, F, L = A_next, F_next, L_next
        if progress is not None:
            progress(1)
    Z = model.decode_types(A, batch, num_atoms)
    L_out = L * model.lattice_scale(num_atoms, dtype)
    traj.final = CrystalBatch(Z=Z, F=F, L=L_out, batch=batch, num_atoms=num_atoms)
    return traj


def sample_crystals(
    model: nn.Module,
    n: int,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 256,
    progress: bool = True,
    constraints: ChemConstraints | None = None,
) -> list[Crystal | None]:
    """``n`` crystals, reproducible for a given (seed, steps, batch_size); ``None`` where degenerate.

    ``constraints`` are enforced inside the sampler (every crystal satisfies them); ``None`` keeps
    whatever ``model.set_constraints`` set (normally nothing).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    n_steps = len(respaced_timesteps(model.config.timesteps, steps or model.config.sample_steps))
    out: list[Crystal | None] = []
    bar = tqdm(total=n * n_steps, desc="sampling", unit="step·crystal", disable=not progress, unit_scale=True)
    with constrained(model, constraints), bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            traj = sample(model, b, generator=gen, steps=steps, progress=lambda k, b=b: bar.update(k * b))
            out.extend(traj.final.to_crystals(strict=False))
    return out


@contextmanager
def constrained(model: nn.Module, constraints: ChemConstraints | None) -> Iterator[nn.Module]:
    """``model`` under ``constraints`` inside the block (``None``: as it is); its own setting restored after."""
    before = model.constraint
    if constraints is not None:
        model.set_constraints(constraints)
    try:
        yield model
    finally:
        model.constraint = before
