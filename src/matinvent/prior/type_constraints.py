"""Chemical-space constraints as masks inside the crystal sampler: exact, never by rejection.

:class:`TypeConstraint` is :class:`~matinvent.crystal.constraints.ChemConstraints` compiled for one prior
(K element columns, column k = element Z = k + 1; an atom-count histogram over 0..max_atoms):

- atom count: the categorical over N (the prior's histogram or the atom-count policy) is
  restricted to the allowed counts and renormalised (:meth:`TypeConstraint.natoms_prob`);
- element set S: every atom's categorical over elements is restricted to S and renormalised;
- max distinct elements k and chemical system R (the *sequential* rules): a crystal's atoms are
  decided in a fixed order — with masked types the atoms decided before this step first, then
  those decided in this step in index order. An atom that sees the set P of elements decided
  before it, and m atoms of its crystal still undecided after it, may take

      R ∖ P      if |R ∖ P| > m     (else a required element could no longer fit),
      P ∩ S      if |P| ≥ k,
      S          otherwise.

  Each decision is then a masked categorical, and a step's log-probability is the sum of those
  conditionals. Every atom's allowed set is a function of the stored transition (A_t, A_{t_prev})
  alone (:meth:`TypeConstraint.step_masks`), so training recomputes exactly what the sampler used;
  the KL of two models is Σ_atoms u·KL(masked p̂ ‖ masked q̂) given the stored prefix — the chain
  rule over sub-steps that the F corrector/predictor pair already uses.
- Gaussian (one-hot DDPM) types: the x̂0 logits are masked to S at every step (a deterministic
  change of the Gaussian mean: log-probs stay exact), and the final argmax decodes atoms in index
  order under the sequential rules (a deterministic function of the final state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as Fn

from matinvent.config_io import ConfigError
from matinvent.crystal.batch import scatter_sum
from matinvent.crystal.constraints import ChemConstraints, sort_by_z
from matinvent.diffusion.absorbing import absorbing_kl, gumbel_noise


def masked_log_probs(log_p: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """(N, K) log-probs renormalised over ``allowed`` (N, K) bool; −inf elsewhere (``None``: unchanged)."""
    if allowed is None:
        return log_p
    return torch.log_softmax(log_p.masked_fill(~allowed, -torch.inf), dim=-1)


def masked_kl(log_p: torch.Tensor, log_q: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(N,) KL(p ‖ q) of two categoricals on the same support ``allowed`` (N, K) (NaN-free, also in grads)."""
    lp = masked_log_probs(log_p, allowed).masked_fill(~allowed, 0.0)
    lq = masked_log_probs(log_q, allowed).masked_fill(~allowed, 0.0)
    return (lp.exp() * allowed * (lp - lq)).sum(-1)


def absorbing_kl_masked(
    log_p0: torch.Tensor, log_q0: torch.Tensor, masked: torch.Tensor, unmask: float, allowed: torch.Tensor | None
) -> torch.Tensor:
    """(N,) per-atom KL of one absorbing-state step, each atom's clean-element categorical masked to ``allowed``."""
    if allowed is None:
        return absorbing_kl(log_p0, log_q0, masked, unmask)
    kl = masked_kl(log_p0, log_q0, allowed)
    return torch.where(masked, unmask * kl, torch.zeros_like(kl))


def _exclusive_prefix(x: torch.Tensor, batch: torch.Tensor, B: int) -> torch.Tensor:
    """Σ of ``x`` (N, ...) over the earlier atoms of the same crystal (atoms stored crystal by crystal)."""
    total = scatter_sum(x, batch, B)
    before = total.cumsum(0) - total  # Σ over all earlier crystals
    return x.cumsum(0) - x - before[batch]


@dataclass
class TypeConstraint:
    """Masks of one :class:`ChemConstraints` for one prior (CPU tensors; moved to the data's device on use).

    allowed, required: (K,) bool element columns; natoms: (max_atoms + 1,) bool allowed counts.
    """

    spec: ChemConstraints
    allowed: torch.Tensor
    required: torch.Tensor
    max_elements: int | None
    natoms: torch.Tensor

    @classmethod
    def build(
        cls, spec: ChemConstraints, n_types: int, natoms_prob: torch.Tensor, source: str = "the prior"
    ) -> TypeConstraint:
        """Compile ``spec`` for a prior with ``n_types`` elements (Z 1..n_types) and atom-count histogram
        ``natoms_prob`` (index = N); errors name the constraint key and ``source``."""
        from ase.data import atomic_numbers

        beyond = [s for s in (spec.elements or frozenset()) | spec.required if atomic_numbers[s] > n_types]
        if beyond:
            raise ConfigError(
                f"constraints key '{'chemsys' if set(beyond) & spec.required else 'elements'}': "
                f"{', '.join(sort_by_z(beyond))} lie beyond the {n_types} element types (Z <= {n_types}) of {source}"
            )
        allowed = torch.zeros(n_types, dtype=torch.bool)
        required = torch.zeros(n_types, dtype=torch.bool)
        for s in spec.allowed:
            if atomic_numbers[s] <= n_types:
                allowed[atomic_numbers[s] - 1] = True
        for s in spec.required:
            required[atomic_numbers[s] - 1] = True
        if not allowed.any():
            raise ConfigError(f"constraints: none of the allowed elements is among the element types of {source}")
        support = natoms_prob.detach().cpu() > 0
        counts = torch.arange(len(support))
        natoms = support & (counts >= max(int(required.sum()), 1))
        if spec.natoms is not None:
            lo, hi = spec.natoms
            have = counts[support]
            first, last = int(have.min()), int(have.max())
            if lo < first or hi > last:
                raise ConfigError(
                    f"constraints key 'natoms': {lo}:{hi} lies outside the atom counts {first}:{last} of {source}"
                )
            natoms &= (counts >= lo) & (counts <= hi)
        if not natoms.any():
            raise ConfigError(f"constraints key 'natoms': no atom count of {source} satisfies the constraints")
        return cls(spec, allowed, required, spec.max_elements, natoms)

    @property
    def sequential(self) -> bool:
        """Whether an atom's allowed set depends on the atoms decided before it."""
        return self.max_elements is not None or bool(self.required.any())

    # --- atom counts -------------------------------------------------------------------------
    def natoms_prob(self, prob: torch.Tensor) -> torch.Tensor:
        """The histogram ``prob`` (index = N) restricted to the allowed counts and renormalised."""
        masked = torch.where(self.natoms.to(prob.device), prob, torch.zeros_like(prob))
        return masked / masked.sum()

    def check_natoms(self, num_atoms: torch.Tensor) -> None:
        """Raise ``ValueError`` when a given atom count violates the constraint."""
        ok = self.natoms.to(num_atoms.device)
        bad = (num_atoms >= len(ok)) | ~ok[num_atoms.clamp(max=len(ok) - 1)]
        if bad.any():
            raise ValueError(f"atom counts {sorted(set(num_atoms[bad].tolist()))} violate the constraints")

    # --- one atom's rule -----------------------------------------------------------------------
    def rule(self, present: torch.Tensor, undecided_after: torch.Tensor) -> torch.Tensor:
        """(M, K) allowed elements of M atoms, given the elements ``present`` (M, K) bool in their
        crystals so far and the number ``undecided_after`` (M,) of their crystals' atoms left after them."""
        allowed = self.allowed.to(present.device)
        out = allowed.expand_as(present)
        if self.max_elements is not None:
            full = present.sum(-1) >= self.max_elements
            out = torch.where(full.unsqueeze(-1), present & allowed, out)
        if self.required.any():
            missing = self.required.to(present.device) & ~present
            force = missing.sum(-1) > undecided_after
            out = torch.where(force.unsqueeze(-1), missing, out)
        return out

    # --- masked (absorbing-state) types ------------------------------------------------------
    def step_masks(
        self, A: torch.Tensor, A_next: torch.Tensor, batch: torch.Tensor, num_atoms: torch.Tensor, n_types: int
    ) -> torch.Tensor:
        """(N, K) allowed elements of every atom in the stored step A (N, K+1) → A_next (N, K+1).

        Atoms not masked at t get every column (they are copied; this keeps their rows finite).
        """
        masked = A[:, n_types] > 0.5
        N = A.shape[0]
        if not self.sequential:
            return self.allowed.to(A.device).expand(N, n_types) | ~masked.unsqueeze(-1)
        B = len(num_atoms)
        new = masked & (A_next[:, n_types] < 0.5)
        decided_t = (A[:, :n_types] > 0.5) & ~masked.unsqueeze(-1)
        new_el = (A_next[:, :n_types] > 0.5) & new.unsqueeze(-1)
        committed = scatter_sum(decided_t.long(), batch, B) > 0
        present = committed[batch] | (_exclusive_prefix(new_el.long(), batch, B) > 0)
        n_masked = scatter_sum(masked.long(), batch, B)
        undecided_after = n_masked[batch] - _exclusive_prefix(new.long(), batch, B) - 1
        return self.rule(present, undecided_after) | ~masked.unsqueeze(-1)

    def sample_step(
        self,
        A: torch.Tensor,
        log_p0: torch.Tensor,
        unmask: float,
        n_types: int,
        batch: torch.Tensor,
        num_atoms: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_next, allowed (N, K)): the constrained :func:`matinvent.prior.masked_types.sample_step`.

        Draws the same noise as the unconstrained step (so a constraint that excludes nothing
        reproduces it); with the sequential rules the atoms are decided position by position.
        """
        N = A.shape[0]
        decide = torch.rand(N, generator=generator, dtype=torch.float64).to(A.device) < unmask
        g = gumbel_noise((N, n_types), generator, log_p0.dtype).to(A.device)
        masked = A[:, n_types] > 0.5
        idx = A.argmax(-1)
        if not self.sequential:
            allowed = self.step_masks(A, A, batch, num_atoms, n_types)
            drawn = (log_p0.masked_fill(~allowed, -torch.inf) + g).argmax(-1)
            idx = torch.where(masked & decide, drawn, idx)
            return Fn.one_hot(idx, n_types + 1).to(A.dtype), allowed
        B = len(num_atoms)
        decided_t = (A[:, :n_types] > 0.5) & ~masked.unsqueeze(-1)
        present = scatter_sum(decided_t.long(), batch, B) > 0
        undecided = scatter_sum(masked.long(), batch, B)
        allowed = torch.ones(N, n_types, dtype=torch.bool, device=A.device)
        start = num_atoms.cumsum(0) - num_atoms
        for pos in range(int(num_atoms.max())):
            rows = torch.nonzero(num_atoms > pos).squeeze(-1)
            atoms = start[rows] + pos
            keep = masked[atoms]
            rows, atoms = rows[keep], atoms[keep]
            if not len(atoms):
                continue
            al = self.rule(present[rows], undecided[rows] - 1)
            allowed[atoms] = al
            choice = (log_p0[atoms].masked_fill(~al, -torch.inf) + g[atoms]).argmax(-1)
            d = decide[atoms]
            idx[atoms[d]] = choice[d]
            present[rows[d], choice[d]] = True
            undecided[rows[d]] -= 1
        return Fn.one_hot(idx, n_types + 1).to(A.dtype), allowed

    # --- Gaussian (one-hot) types ------------------------------------------------------------
    def decode(self, X: torch.Tensor, batch: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        """(N,) atomic numbers from the final one-hot-space state X (N, K): the argmax over the
        allowed elements, atoms in index order under the sequential rules."""
        if not self.sequential:
            return X.masked_fill(~self.allowed.to(X.device), -torch.inf).argmax(-1) + 1
        B, K = len(num_atoms), X.shape[-1]
        present = torch.zeros(B, K, dtype=torch.bool, device=X.device)
        Z = torch.zeros(X.shape[0], dtype=torch.long, device=X.device)
        start = num_atoms.cumsum(0) - num_atoms
        for pos in range(int(num_atoms.max())):
            rows = torch.nonzero(num_atoms > pos).squeeze(-1)
            atoms = start[rows] + pos
            al = self.rule(present[rows], num_atoms[rows] - pos - 1)
            choice = X[atoms].masked_fill(~al, -torch.inf).argmax(-1)
            Z[atoms] = choice + 1
            present[rows, choice] = True
        return Z
