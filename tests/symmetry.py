"""Reusable symmetry checks for crystal denoisers.

A denoiser is any callable ``model(A, F, L, t, batch, num_atoms) -> (eps_L, s_F, eps_A)`` with
L (B, 3, 3) rows = lattice vectors, F (N, 3) fractional, A (N, K), t (B,). Each check raises
``AssertionError`` (naming the output that broke) when the symmetry does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class DenoiserInput:
    A: torch.Tensor
    F: torch.Tensor
    L: torch.Tensor
    t: torch.Tensor
    batch: torch.Tensor
    num_atoms: torch.Tensor

    def args(self):
        return self.A, self.F, self.L, self.t, self.batch, self.num_atoms


def random_input(
    num_atoms: list[int], n_types: int = 100, T: int = 1000, seed: int = 0, dtype=torch.float64
) -> DenoiserInput:
    """Random skewed lattices, fractional coordinates in [0, 1), continuous types, random times."""
    gen = torch.Generator().manual_seed(seed)
    n = torch.tensor(num_atoms, dtype=torch.long)
    N, B = int(n.sum()), len(num_atoms)
    L = 4.0 * torch.eye(3, dtype=dtype) + 0.8 * torch.randn(B, 3, 3, generator=gen, dtype=dtype)
    return DenoiserInput(
        A=torch.randn(N, n_types, generator=gen, dtype=dtype),
        F=torch.rand(N, 3, generator=gen, dtype=dtype),
        L=L,
        t=torch.randint(1, T + 1, (B,), generator=gen),
        batch=torch.repeat_interleave(torch.arange(B), n),
        num_atoms=n,
    )


def random_orthogonal(gen: torch.Generator, reflection: bool, dtype=torch.float64) -> torch.Tensor:
    """A random 3x3 orthogonal matrix with det = -1 (``reflection``) or +1."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.linalg.det(q) < 0) != reflection:
        q = q.clone()
        q[:, 0] = -q[:, 0]
    return q


@torch.no_grad()
def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float) -> None:
    err = float((actual - expected).abs().max())
    scale = float(expected.abs().max())
    if not err <= atol:
        raise AssertionError(f"{what}: max abs deviation {err:.3g} > {atol:g} (output scale {scale:.3g})")


def check_lattice_transform(model, x: DenoiserInput, R: torch.Tensor, atol: float = 1e-10) -> None:
    """L -> L Rᵀ (R orthogonal): ε̂_L -> ε̂_L Rᵀ, ŝ_F and ε̂_A unchanged."""
    eps_L, s_F, eps_A = model(*x.args())
    eps_L2, s_F2, eps_A2 = model(*replace(x, L=x.L @ R.T).args())
    _close(eps_L2, eps_L @ R.T, "eps_L equivariance under L -> L R^T", atol)
    _close(s_F2, s_F, "s_F invariance under L -> L R^T", atol)
    _close(eps_A2, eps_A, "eps_A invariance under L -> L R^T", atol)


def check_shift(model, x: DenoiserInput, shift: torch.Tensor, atol: float = 1e-10, per_atom: bool = False) -> None:
    """F -> (F + shift[batch]) mod 1 with one shift (B, 3) per crystal: all outputs unchanged.

    ``per_atom=True`` takes ``shift`` (N, 3) as is (not a symmetry: for testing this check).
    """
    out = model(*x.args())
    out2 = model(*replace(x, F=torch.remainder(x.F + (shift if per_atom else shift[x.batch]), 1.0)).args())
    for name, a, b in zip(("eps_L", "s_F", "eps_A"), out2, out, strict=True):
        _close(a, b, f"{name} invariance under a common fractional shift", atol)


def check_permutation(model, x: DenoiserInput, perm: torch.Tensor, atol: float = 1e-10) -> None:
    """Reorder atoms by ``perm`` (N,) (batch vector unchanged): ŝ_F, ε̂_A permute, ε̂_L unchanged."""
    eps_L, s_F, eps_A = model(*x.args())
    eps_L2, s_F2, eps_A2 = model(*replace(x, A=x.A[perm], F=x.F[perm]).args())
    _close(eps_L2, eps_L, "eps_L invariance under atom permutation", atol)
    _close(s_F2, s_F[perm], "s_F equivariance under atom permutation", atol)
    _close(eps_A2, eps_A[perm], "eps_A equivariance under atom permutation", atol)


def check_periodic_image(model, x: DenoiserInput, atom: int, offset: torch.Tensor, atol: float = 1e-10) -> None:
    """F[atom] -> F[atom] + offset (not wrapped): for an integer offset all outputs are unchanged."""
    F = x.F.clone()
    F[atom] = F[atom] + offset.to(F.dtype)
    out, out2 = model(*x.args()), model(*replace(x, F=F).args())
    for name, a, b in zip(("eps_L", "s_F", "eps_A"), out2, out, strict=True):
        _close(a, b, f"{name} invariance under a periodic image of atom {atom}", atol)


def within_crystal_permutation(num_atoms: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random permutation of the atoms of each crystal (never moves an atom to another crystal)."""
    parts, start = [], 0
    for n in num_atoms.tolist():
        parts.append(start + torch.randperm(n, generator=gen))
        start += n
    return torch.cat(parts)


def assert_denoiser_symmetries(model, x: DenoiserInput, seed: int = 0, atol: float = 1e-10) -> None:
    """All symmetries of a periodic E(3)-invariant crystal denoiser, with random transforms."""
    gen = torch.Generator().manual_seed(seed)
    dtype = x.F.dtype
    for reflection in (False, True):
        check_lattice_transform(model, x, random_orthogonal(gen, reflection, dtype), atol)
    check_shift(model, x, torch.rand(1, 3, generator=gen, dtype=dtype).expand(x.L.shape[0], 3), atol)
    check_shift(model, x, torch.rand(x.L.shape[0], 3, generator=gen, dtype=dtype), atol)
    check_permutation(model, x, within_crystal_permutation(x.num_atoms, gen), atol)
    for atom in (0, len(x.F) - 1):
        offset = torch.randint(-3, 4, (3,), generator=gen)
        if not offset.any():
            offset[0] = 1
        check_periodic_image(model, x, atom, offset, atol)
