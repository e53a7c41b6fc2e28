"""The CSPNet denoiser: E(3)/periodic/permutation symmetries, and that the symmetry checks can fail."""

from __future__ import annotations

import pytest
import torch
from symmetry import (
    DenoiserInput,
    assert_denoiser_symmetries,
    check_lattice_transform,
    check_periodic_image,
    check_permutation,
    check_shift,
    random_input,
    random_orthogonal,
)

from matinvent.prior.denoiser import CSPDenoiser, DenoiserConfig, periodic_fourier_features, sinusoidal_embedding

ATOL = 1e-10


@pytest.fixture
def denoiser() -> CSPDenoiser:
    torch.manual_seed(0)
    return CSPDenoiser(DenoiserConfig(hidden=32, layers=2, n_freq=4, time_dim=16)).double().eval()


@pytest.fixture
def x() -> DenoiserInput:
    return random_input([2, 5, 3], seed=1)


def test_output_shapes_and_scale(denoiser, x):
    eps_L, s_F, eps_A = denoiser(*x.args())
    assert eps_L.shape == (3, 3, 3) and s_F.shape == (10, 3) and eps_A.shape == (10, 100)
    assert eps_L.dtype == s_F.dtype == eps_A.dtype == torch.float64
    for out in (eps_L, s_F, eps_A):
        assert torch.isfinite(out).all()
        assert out.abs().max() > 1e-3  # not trivially zero, so the symmetry checks mean something


@pytest.mark.parametrize("num_atoms", [[2, 5, 3], [1, 6, 4]])
@pytest.mark.parametrize("seed", [0, 1])
def test_denoiser_symmetries(denoiser, num_atoms, seed):
    assert_denoiser_symmetries(denoiser, random_input(num_atoms, seed=seed), seed=seed, atol=ATOL)


@torch.no_grad()
def test_outputs_depend_on_every_input(denoiser, x):
    """Guards against a trivially invariant network: each input changes the outputs."""
    base = denoiser(*x.args())

    def changed(**kw):
        out = denoiser(*DenoiserInput(**{**x.__dict__, **kw}).args())
        return [float((a - b).abs().max()) for a, b in zip(out, base, strict=True)]

    stretch = torch.diag(torch.tensor([1.3, 1.0, 0.8], dtype=torch.float64))
    assert min(changed(L=x.L @ stretch)) > 1e-4  # cell shape
    F = x.F.clone()
    F[3] = (F[3] + 0.21) % 1.0  # one atom of crystal 1 moves
    assert min(changed(F=F)) > 1e-4
    A = x.A.clone()
    A[0] = A[0] + 1.0
    assert min(changed(A=A)) > 1e-4
    assert min(changed(t=x.t + 7)) > 1e-4


def test_crystals_in_a_batch_do_not_interact(denoiser, x):
    eps_L, s_F, eps_A = denoiser(*x.args())
    start = 0
    for i, n in enumerate(x.num_atoms.tolist()):
        sl = slice(start, start + n)
        single = DenoiserInput(
            A=x.A[sl], F=x.F[sl], L=x.L[i : i + 1], t=x.t[i : i + 1],
            batch=torch.zeros(n, dtype=torch.long), num_atoms=x.num_atoms[i : i + 1],
        )  # fmt: skip
        e_L, s, e_A = denoiser(*single.args())
        torch.testing.assert_close(e_L[0], eps_L[i], rtol=0, atol=ATOL)
        torch.testing.assert_close(s, s_F[sl], rtol=0, atol=ATOL)
        torch.testing.assert_close(e_A, eps_A[sl], rtol=0, atol=ATOL)
        start += n


def test_random_orthogonal_helper():
    gen = torch.Generator().manual_seed(0)
    for reflection in (False, True):
        R = random_orthogonal(gen, reflection)
        torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-14)
        assert float(torch.linalg.det(R)) == pytest.approx(-1.0 if reflection else 1.0, abs=1e-12)


# --- the checks are sensitive: non-symmetries of the real model fail ----------------------------------
def test_lattice_check_fails_for_a_shear(denoiser, x):
    shear = torch.tensor([[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(AssertionError, match="L -> L R"):
        check_lattice_transform(denoiser, x, shear, ATOL)


def test_shift_check_fails_for_a_per_atom_shift(denoiser, x):
    shift = torch.rand(len(x.F), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(AssertionError, match="common fractional shift"):
        check_shift(denoiser, x, shift, ATOL, per_atom=True)
    check_shift(denoiser, x, shift[:1].expand(len(x.F), 3), ATOL, per_atom=True)  # one shift for all atoms is fine


def test_permutation_check_fails_across_crystals(denoiser, x):
    perm = torch.arange(len(x.F))
    perm[[0, 2]] = perm[[2, 0]]  # atom 0 (crystal 0) <-> atom 2 (crystal 1)
    with pytest.raises(AssertionError, match="permutation"):
        check_permutation(denoiser, x, perm, ATOL)


def test_periodic_image_check_fails_for_half_cell_offset(denoiser, x):
    with pytest.raises(AssertionError, match="periodic image"):
        check_periodic_image(denoiser, x, 4, torch.tensor([0.5, 0.0, 0.0]), ATOL)


# --- the checks are sensitive: deliberately broken models fail -------------------------------------------
class _Broken(torch.nn.Module):
    def __init__(self, inner: CSPDenoiser, kind: str) -> None:
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, A, F, L, t, batch, num_atoms):
        eps_L, s_F, eps_A = self.inner(A, F, L, t, batch, num_atoms)
        if self.kind == "orientation":  # reads a Cartesian component of the cell
            s_F = s_F * (1 + L[batch, 0, :1])
        elif self.kind == "lattice_offset":  # ε̂_L + I is not equivariant
            eps_L = eps_L + torch.eye(3, dtype=L.dtype)
        elif self.kind == "absolute_position":  # depends on F itself, not on differences mod 1
            s_F = s_F + 1e-3 * F
        elif self.kind == "atom_index":  # depends on the storage order of the atoms
            eps_A = eps_A + 1e-3 * torch.arange(len(A), dtype=A.dtype)[:, None]
        return eps_L, s_F, eps_A


@pytest.mark.parametrize(
    "kind, failing_check",
    [
        ("orientation", "s_F invariance under L -> L R"),
        ("lattice_offset", "eps_L equivariance"),
        ("absolute_position", "s_F invariance under a common fractional shift"),
        ("atom_index", "eps_A equivariance under atom permutation"),
    ],
)
def test_symmetry_helper_catches_broken_models(denoiser, x, kind, failing_check):
    broken = _Broken(denoiser, kind)
    with pytest.raises(AssertionError, match=failing_check):
        assert_denoiser_symmetries(broken, x, atol=ATOL)


def test_periodic_image_check_catches_absolute_positions(denoiser, x):
    broken = _Broken(denoiser, "absolute_position")
    check_periodic_image(denoiser, x, 1, torch.tensor([1, -2, 0]), ATOL)
    with pytest.raises(AssertionError, match="periodic image"):
        check_periodic_image(broken, x, 1, torch.tensor([1, -2, 0]), ATOL)


# --- feature helpers ----------------------------------------------------------------------------------
def test_fourier_features_are_periodic():
    gen = torch.Generator().manual_seed(0)
    d = torch.rand(20, 3, generator=gen, dtype=torch.float64)
    f = periodic_fourier_features(d, 5)
    assert f.shape == (20, 30)
    torch.testing.assert_close(periodic_fourier_features(d + 3.0, 5), f, rtol=0, atol=1e-12)
    torch.testing.assert_close(periodic_fourier_features(d - 1.0, 5), f, rtol=0, atol=1e-12)


def test_sinusoidal_embedding_distinguishes_times():
    emb = sinusoidal_embedding(torch.arange(1, 1001), 16)
    assert emb.shape == (1000, 16)
    d = torch.cdist(emb, emb)
    d.fill_diagonal_(1.0)
    assert float(d.min()) > 1e-4
