"""Joint diffusion over crystals M = (A, F, L): the prior model, its forward noise and its loss.

- L: DDPM with a cosine β schedule. The lattice is diffused in a per-atom scaled frame
  L̃ = L / N^(1/3) (``scale_lattice``), so cells of all sizes share one noise scale.
- A (``type_diffusion: gaussian``): DDPM on the one-hot atom types (n_types classes, type =
  argmax at the end); ``type_diffusion: masked``: absorbing-state discrete diffusion, each atom
  decided once from the denoiser's categorical (:mod:`matinvent.prior.masked_types`). With
  ``type_prediction = "x0"`` the denoiser's type head gives logits of the clean one-hot,
  added to the per-atom Bayes logits √ᾱ_t/(1−ᾱ_t)·A_t, and ε̂_A = (A_t − √ᾱ_t x̂0)/√(1−ᾱ_t);
  the loss is the ε-MSE of Eq. (8), optionally plus ``cost_type_ce`` × the cross-entropy of
  x̂0_A (D3PM's auxiliary loss), which weights all t alike: the ε-MSE weights x̂0 errors by the
  SNR ᾱ/(1−ᾱ), least where the composition is decided. Near t = 0 the types are then recovered exactly
  instead of having to be copied through the network (``"eps"``: DiffCSP's direct ε̂_A).
- Ancestral steps on L and A clamp the implied x̂0 to ±``clip_lattice`` / ±``clip_types``
  (in the diffusion frame) before forming the posterior mean; the mean stays a deterministic
  function of the network output, so log-probs and KLs remain exact.
- F: wrapped-normal score matching with a geometric σ schedule, sampled with a
  predictor–corrector scheme (Langevin corrector, reverse-SDE predictor; DiffCSP).
- Chemical-space constraints (``set_constraints``) mask the N distribution and the type
  categoricals inside the sampler; log-probs and KLs are those of the masked distributions
  (:mod:`matinvent.prior.type_constraints`).

The predictor–corrector reverse step and the sampling chain live in :mod:`matinvent.prior.sampler`;
``sample`` and ``transition_params`` here call it. log p_θ(M_{t_prev} | M_t) (with F_mid as part of
the action) and the KL between two models on the same state are sums of analytic Gaussian (and, for
masked types, categorical) terms: ``transition_log_prob`` and ``transition_kl`` in
:mod:`matinvent.prior.likelihood`. Sub-steps with zero standard deviation (the last step to t = 0,
except the masked types' final decision) are deterministic and add nothing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as Fn

from matinvent.config_io import ConfigError
from matinvent.crystal.batch import CrystalBatch, scatter_sum
from matinvent.crystal.constraints import ChemConstraints
from matinvent.diffusion import (
    AbsorbingSchedule,
    CosineBetaSchedule,
    GeometricSigmaSchedule,
    wrap,
    wrapped_normal_score,
    wrapped_normal_score_norm,
)
from matinvent.prior import masked_types as mt
from matinvent.prior import sampler
from matinvent.prior import type_constraints as tc
from matinvent.prior.denoiser import CSPDenoiser, DenoiserConfig
from matinvent.prior.diffusion_config import DiffusionConfig
from matinvent.prior.transitions import NoisedBatch


class CrystalDiffusion(nn.Module):
    """The prior: a denoiser plus the schedules that turn it into a generative model."""

    def __init__(self, denoiser_config: DenoiserConfig, diffusion_config: DiffusionConfig) -> None:
        super().__init__()
        self.denoiser_config = denoiser_config
        self.config = diffusion_config
        T = diffusion_config.timesteps
        if diffusion_config.type_diffusion not in ("gaussian", "masked"):
            raise ValueError(f"type_diffusion must be 'gaussian' or 'masked', got {diffusion_config.type_diffusion!r}")
        self.masked_types = diffusion_config.type_diffusion == "masked"
        type_dim = denoiser_config.n_types + int(self.masked_types)
        self.denoiser = CSPDenoiser(denoiser_config, type_input_dim=type_dim)
        self.absorbing = AbsorbingSchedule(T, diffusion_config.absorbing_schedule) if self.masked_types else None
        self.beta = CosineBetaSchedule(T)
        self.sigma = GeometricSigmaSchedule(T, diffusion_config.sigma_begin, diffusion_config.sigma_end)
        self.register_buffer("sigma_norm", wrapped_normal_score_norm(self.sigma.sigmas[1:]))
        self.register_buffer("natoms_prob", torch.ones(diffusion_config.max_atoms + 1, dtype=torch.float64))
        self.natoms_prob[0] = 0.0
        self.constraint: tc.TypeConstraint | None = None  # chemical-space masks (set_constraints)

    @property
    def n_types(self) -> int:
        return self.denoiser_config.n_types

    # --- frames --------------------------------------------------------------------------
    def lattice_scale(self, num_atoms: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if not self.config.scale_lattice:
            return torch.ones(len(num_atoms), 1, 1, dtype=dtype, device=num_atoms.device)
        return num_atoms.to(dtype).pow(1.0 / 3.0).view(-1, 1, 1)

    def set_natoms_histogram(self, counts: torch.Tensor) -> None:
        """Store the training-set distribution of atom counts (index = N)."""
        prob = torch.zeros(self.config.max_atoms + 1, dtype=torch.float64)
        counts = torch.as_tensor(counts, dtype=torch.float64)[: self.config.max_atoms + 1]
        prob[: len(counts)] = counts
        prob[0] = 0.0
        if prob.sum() <= 0:
            raise ValueError("atom-count histogram is empty")
        self.natoms_prob.copy_(prob / prob.sum())

    def set_constraints(self, constraints: ChemConstraints | None, source: str = "the prior") -> None:
        """Sample (and score transitions) under ``constraints`` (see :mod:`~.type_constraints`); None: free."""
        self.constraint = None
        if constraints is None or not constraints.active:
            return
        if not self.masked_types and self.config.type_prediction != "x0":
            raise ConfigError(
                f"{source} predicts ε of its Gaussian atom types (type_prediction: eps): it has no type logits "
                "to mask, so chemical-space constraints need a prior with type_prediction x0 or masked types"
            )
        self.constraint = tc.TypeConstraint.build(constraints, self.n_types, self.natoms_prob, source)

    def score_estimate(self, F_out: torch.Tensor, t: int) -> torch.Tensor:
        """Network output (normalised score) → score estimate at time t."""
        return F_out * self.sigma_norm[t - 1].to(F_out.dtype).sqrt()

    def predict(self, A, F, L, t: torch.Tensor, batch, num_atoms, return_type_logits: bool = False):
        """(ε̂_L, normalised ŝ_F, ε̂_A) for noisy crystals at per-crystal times ``t`` (B,).

        With ``return_type_logits`` (x0 type prediction only) the logits of x̂0_A come fourth.
        Masked types: the third output is p̂(x_0) (N, K), the fourth its logarithm.
        """
        eps_L, s_F, type_out = self.denoiser(A, F, L, t, batch, num_atoms)
        if self.masked_types:
            log_p0 = mt.x0_log_probs(type_out, A, self.n_types)
            return (eps_L, s_F, log_p0.exp(), log_p0) if return_type_logits else (eps_L, s_F, log_p0.exp())
        if self.config.type_prediction == "eps":
            return (eps_L, s_F, type_out, None) if return_type_logits else (eps_L, s_F, type_out)
        ab = self.beta.alphas_cumprod.to(A.device, A.dtype)[t][batch].view(-1, 1)
        logits = type_out + ab.sqrt() / (1 - ab) * A
        if self.constraint is not None:  # x̂0 over the allowed elements only
            logits = logits.masked_fill(~self.constraint.allowed.to(A.device), -torch.inf)
        eps_A = (A - ab.sqrt() * torch.softmax(logits, dim=-1)) / (1 - ab).sqrt()
        return (eps_L, s_F, eps_A, logits) if return_type_logits else (eps_L, s_F, eps_A)

    def denoise_at(self, A, F, L, t: int, batch, num_atoms, return_type_logits: bool = False):
        tt = torch.full((L.shape[0],), t, device=L.device, dtype=torch.long)
        return self.predict(A, F, L, tt, batch, num_atoms, return_type_logits)

    # --- training ------------------------------------------------------------------------
    def noise(self, crystals: CrystalBatch, generator: torch.Generator | None = None) -> NoisedBatch:
        """Draw t and the forward noise for a batch of clean crystals (the training inputs/targets)."""
        dev, dtype = crystals.L.device, crystals.L.dtype
        B = crystals.num_graphs
        T = self.config.timesteps

        def randn(*shape):
            return torch.randn(*shape, generator=generator, dtype=dtype).to(dev)

        t = torch.randint(1, T + 1, (B,), generator=generator).to(dev)
        t_atom = t[crystals.batch]
        L0 = crystals.L / self.lattice_scale(crystals.num_atoms, dtype)
        eps_L = randn(B, 3, 3)
        L_t = self.beta.add_noise(L0, eps_L, t.view(-1, 1, 1))
        type_masked = None
        if self.masked_types:
            A_t, type_masked = mt.mask_types(crystals.Z, t_atom, self.absorbing, self.n_types, generator, dtype)
            eps_A = None
        else:
            A0 = Fn.one_hot(crystals.Z - 1, self.n_types).to(dtype)
            eps_A = randn(*A0.shape)
            A_t = self.beta.add_noise(A0, eps_A, t_atom.view(-1, 1))
        sig = self.sigma.sigmas.to(dev, dtype)[t_atom].view(-1, 1)
        F_t = wrap(crystals.F + sig * randn(*crystals.F.shape))
        target_F = wrapped_normal_score(F_t, crystals.F, sig) / self.sigma_norm.to(dtype)[t_atom - 1].sqrt().view(-1, 1)
        return NoisedBatch(
            t, A_t, F_t, L_t, eps_L, eps_A, target_F, crystals.Z, crystals.batch, crystals.num_atoms, type_masked
        )

    def predict_noised(self, nb: NoisedBatch):
        """(ε̂_L, ŝ_F, ε̂_A, type logits or None) for a noised batch."""
        return self.predict(nb.A_t, nb.F_t, nb.L_t, nb.t, nb.batch, nb.num_atoms, return_type_logits=True)

    def loss(
        self, crystals: CrystalBatch, generator: torch.Generator | None = None, per_crystal: bool = False
    ) -> dict[str, torch.Tensor]:
        """Eq. (5) + (8) + (11): ε-MSE on L and A, λ_t-normalised score matching on F.

        Scalars averaged over all entries of the batch, or with ``per_crystal`` (B,) tensors
        averaged within each crystal.
        """
        nb = self.noise(crystals, generator)
        return self.loss_of(nb, self.predict_noised(nb), per_crystal)

    def loss_of(self, nb: NoisedBatch, pred, per_crystal: bool = False) -> dict[str, torch.Tensor]:
        """The loss terms of predictions ``pred`` (from :meth:`predict_noised`) against ``nb``'s targets."""
        eps_L_hat, s_F_hat, eps_A_hat, logits = pred
        c = self.config
        if per_crystal:
            B = nb.L_t.shape[0]
            n = nb.num_atoms.to(eps_L_hat.dtype)
            loss_L = ((eps_L_hat - nb.eps_L) ** 2).flatten(1).mean(-1)
            loss_F = scatter_sum(((s_F_hat - nb.target_F) ** 2).sum(-1), nb.batch, B) / (3 * n)
        else:
            loss_L = Fn.mse_loss(eps_L_hat, nb.eps_L)
            loss_F = Fn.mse_loss(s_F_hat, nb.target_F)
        if self.masked_types:  # cross-entropy of the clean element at the masked atoms
            loss_A = mt.type_loss(logits, nb.Z, nb.type_masked, nb.batch, nb.num_atoms, per_crystal)
            logits = None  # the auxiliary CE is the type loss itself
        elif per_crystal:
            loss_A = scatter_sum(((eps_A_hat - nb.eps_A) ** 2).sum(-1), nb.batch, B) / (self.n_types * n)
        else:
            loss_A = Fn.mse_loss(eps_A_hat, nb.eps_A)
        total = c.cost_lattice * loss_L + c.cost_coord * loss_F + c.cost_type * loss_A
        out = {"loss": total, "loss_lattice": loss_L, "loss_coord": loss_F, "loss_type": loss_A}
        if logits is not None and c.cost_type_ce > 0:
            if per_crystal:
                ce = Fn.cross_entropy(logits, nb.Z - 1, reduction="none")
                out["loss_type_ce"] = scatter_sum(ce, nb.batch, nb.L_t.shape[0]) / nb.num_atoms.to(ce.dtype)
            else:
                out["loss_type_ce"] = Fn.cross_entropy(logits, nb.Z - 1)
            out["loss"] = total + c.cost_type_ce * out["loss_type_ce"]
        return out

    transition_params = sampler.transition_params  # a stored transition's means/stds under this model
    transition_params_many = sampler.transition_params_many  # several transitions of one batch, one network call

    def sample_num_atoms(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` atom counts from the histogram (restricted to the constraint's counts when set)."""
        prob = self.natoms_prob if self.constraint is None else self.constraint.natoms_prob(self.natoms_prob)
        return torch.multinomial(prob.float().cpu(), n, replacement=True, generator=generator)

    def decode_types(self, A: torch.Tensor, batch: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        """(N,) atomic numbers of a final type state A (argmax; Gaussian types under the constraint's rules)."""
        if self.constraint is None or self.masked_types:
            return A[:, : self.n_types].argmax(dim=-1) + 1  # masked types: the mask column is empty at the end
        return self.constraint.decode(A[:, : self.n_types], batch, num_atoms)

    sample = sampler.sample  # draw crystals with the predictor–corrector sampler
