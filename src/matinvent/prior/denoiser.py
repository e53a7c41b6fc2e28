"""CSPNet-style periodic E(3)-invariant denoiser (after DiffCSP, Jiao et al. 2023).

Fully connected message passing inside each crystal. Edge input is
[h_i, h_j, the 9 inner products of L Lᵀ, Fourier features of (f_j − f_i) mod 1]; the first edge
layer is linear, so it is split into per-node, per-crystal and per-edge parts and the node
parts are projected once per node, not once per edge. With ``composition_features`` each
atom also sees the crystal's mean type vector and each edge the similarity a_i·a_j/√K of the
two noisy type vectors, so that atoms can agree on a composition. Outputs:

- ε̂_L = Ŷ · L with Ŷ (3, 3) invariant: equivariant under L → L Rᵀ for any orthogonal R;
- ŝ_F (N, 3): invariant to rotations/reflections and to a common shift of F (mod 1);
- type output (N, n_types): invariant (ε̂_A, or x̂0 logits; see ``crystal_diffusion``).

All outputs are equivariant to permutations of the atoms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from matinvent.crystal.batch import fully_connected_edges, scatter_mean


@dataclass
class DenoiserConfig:
    """Width, depth and Fourier frequencies of the denoiser."""

    hidden: int = 128
    layers: int = 4
    n_freq: int = 16
    time_dim: int = 64
    n_types: int = 100
    composition_features: bool = True


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer or real times → (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float64) / max(half - 1, 1))
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


def periodic_fourier_features(d: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(E, 3) fractional displacements → (E, 6·n_freq) features sin/cos(2πk·d), k = 1..n_freq."""
    k = torch.arange(1, n_freq + 1, device=d.device, dtype=d.dtype)
    args = 2 * math.pi * d[..., None] * k
    return torch.cat([args.sin(), args.cos()], dim=-1).flatten(1)


def _pair_dot(
    x: torch.Tensor, batch: torch.Tensor, num_atoms: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
) -> torch.Tensor:
    """(E,) dot products x_src · x_dst for edges inside crystals, via one padded batched matmul
    (B·n_max² outputs) instead of two gathered (E, K) copies."""
    B, n_max = len(num_atoms), int(num_atoms.max())
    local = torch.arange(len(batch), device=x.device) - (torch.cumsum(num_atoms, 0) - num_atoms)[batch]
    padded = x.new_zeros(B, n_max, x.shape[1]).index_put((batch, local), x)
    gram = padded @ padded.transpose(1, 2)
    return gram[batch[src], local[src], local[dst]]


class CSPLayer(nn.Module):
    """One message-passing layer with pre-LayerNorm and a residual update."""

    def __init__(self, hidden: int, n_freq: int, type_similarity: bool = False) -> None:
        super().__init__()
        self.edge_type_sim = nn.Linear(1, hidden, bias=False) if type_similarity else None
        self.norm = nn.LayerNorm(hidden)
        self.edge_src = nn.Linear(hidden, hidden, bias=False)
        self.edge_dst = nn.Linear(hidden, hidden, bias=False)
        self.edge_lattice = nn.Linear(9, hidden, bias=False)
        self.edge_fourier = nn.Linear(6 * n_freq, hidden)
        self.edge_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())

    def forward(
        self,
        h: torch.Tensor,
        lattice_ips: torch.Tensor,
        fourier: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        edge_graph: torch.Tensor,
        type_sim: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hn = self.norm(h)
        pre = self.edge_src(hn)[src] + self.edge_dst(hn)[dst] + self.edge_lattice(lattice_ips)[edge_graph]
        if self.edge_type_sim is not None:
            pre = pre + self.edge_type_sim(type_sim)
        messages = self.edge_out(pre + self.edge_fourier(fourier))
        agg = scatter_mean(messages, src, h.shape[0])
        return h + self.node_mlp(torch.cat([hn, agg], dim=-1))


class CSPDenoiser(nn.Module):
    """Predicts (ε̂_L, ŝ_F, ε̂_A) from a noisy crystal M_t and its time t."""

    def __init__(self, config: DenoiserConfig, type_input_dim: int | None = None) -> None:
        """``type_input_dim``: width of the type state A (n_types, or n_types + 1 with a mask state)."""
        super().__init__()
        self.config = config
        h = config.hidden
        d_in = type_input_dim or config.n_types
        self.type_embed = nn.Linear(d_in, h)
        self.input_mix = nn.Linear(h + config.time_dim, h)
        comp = config.composition_features
        self.comp_embed = nn.Linear(d_in, h, bias=False) if comp else None
        self.layers = nn.ModuleList(CSPLayer(h, config.n_freq, type_similarity=comp) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(h)
        self.coord_out = nn.Linear(h, 3, bias=False)
        self.type_out = nn.Linear(h, config.n_types)
        self.lattice_out = nn.Linear(h, 9, bias=False)

    def forward(
        self,
        A: torch.Tensor,
        F: torch.Tensor,
        L: torch.Tensor,
        t: torch.Tensor,
        batch: torch.Tensor,
        num_atoms: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A: (N, type_input_dim), F: (N, 3) fractional, L: (B, 3, 3) rows = vectors, t: (B,), batch: (N,).

        Returns ε̂_L (B, 3, 3), ŝ_F (N, 3), ε̂_A (N, n_types).
        """
        B = L.shape[0]
        src, dst = fully_connected_edges(num_atoms)
        edge_graph = batch[src]
        fourier = periodic_fourier_features(torch.remainder(F[dst] - F[src], 1.0), self.config.n_freq)
        lattice_ips = (L @ L.transpose(-1, -2)).reshape(B, 9)
        temb = sinusoidal_embedding(t, self.config.time_dim).to(A.dtype)[batch]
        h = self.input_mix(torch.cat([self.type_embed(A), temb], dim=-1))
        type_sim = None
        if self.comp_embed is not None:
            h = h + self.comp_embed(scatter_mean(A, batch, B))[batch]
            K = self.config.n_types  # similarity of the element parts only (a mask state is no element)
            type_sim = _pair_dot(A[:, :K], batch, num_atoms, src, dst).unsqueeze(-1) / math.sqrt(K)
        for layer in self.layers:
            h = layer(h, lattice_ips, fourier, src, dst, edge_graph, type_sim)
        h = self.final_norm(h)
        graph_h = scatter_mean(h, batch, B)
        Y = self.lattice_out(graph_h).view(B, 3, 3)
        return Y @ L, self.coord_out(h), self.type_out(h)
