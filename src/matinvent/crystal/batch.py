"""Variable-size batches of crystals and torch-native scatter helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from matinvent.crystal.record import Crystal, CrystalError


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` (E, ...) into ``dim_size`` groups given by ``index`` (E,)."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of rows of ``src`` per group; empty groups give 0.

    The group sizes are an integer ``index_add_`` of ones (exactly ``bincount``'s counts), which,
    unlike ``bincount``, has a known output size: no host sync on a GPU, no graph break under compile.
    """
    total = scatter_sum(src, index, dim_size)
    count = torch.zeros(dim_size, dtype=torch.long, device=index.device).index_add_(0, index, torch.ones_like(index))
    return total / count.clamp(min=1).to(src.dtype).view(-1, *([1] * (src.dim() - 1)))


@dataclass
class CrystalBatch:
    """B crystals with N_total atoms in all.

    Z: (N_total,) atomic numbers; F: (N_total, 3) fractional; L: (B, 3, 3) Å rows = vectors;
    batch: (N_total,) crystal index of each atom; num_atoms: (B,).
    """

    Z: torch.Tensor
    F: torch.Tensor
    L: torch.Tensor
    batch: torch.Tensor
    num_atoms: torch.Tensor

    @property
    def num_graphs(self) -> int:
        return int(self.num_atoms.shape[0])

    def to(self, device: torch.device | str) -> CrystalBatch:
        return CrystalBatch(*(getattr(self, k).to(device) for k in ("Z", "F", "L", "batch", "num_atoms")))

    @classmethod
    def from_crystals(cls, crystals: list[Crystal], dtype: torch.dtype = torch.float32) -> CrystalBatch:
        num_atoms = torch.tensor([c.num_atoms for c in crystals], dtype=torch.long)
        return cls(
            Z=torch.from_numpy(np.concatenate([c.Z for c in crystals])).long(),
            F=torch.from_numpy(np.concatenate([c.F for c in crystals])).to(dtype),
            L=torch.from_numpy(np.stack([c.L for c in crystals])).to(dtype),
            batch=batch_index(num_atoms),
            num_atoms=num_atoms,
        )

    def to_crystals(self, strict: bool = True) -> list[Crystal | None]:
        """Split back into records. A degenerate crystal (NaN, singular lattice) raises
        ``CrystalError``, or becomes ``None`` when ``strict`` is False."""
        out: list[Crystal | None] = []
        Z, F, L = self.Z.cpu().numpy(), self.F.detach().cpu().double().numpy(), self.L.detach().cpu().double().numpy()
        start = 0
        for i, n in enumerate(self.num_atoms.tolist()):
            try:
                out.append(Crystal(Z=Z[start : start + n], F=F[start : start + n], L=L[i]))
            except CrystalError:
                if strict:
                    raise
                out.append(None)
            start += n
        return out


def batch_index(num_atoms: torch.Tensor) -> torch.Tensor:
    """(N_total,) crystal index of each atom for per-crystal atom counts ``num_atoms`` (B,)."""
    return torch.repeat_interleave(torch.arange(len(num_atoms), device=num_atoms.device), num_atoms)


def fully_connected_edges(num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (i, j) inside each crystal, self-pairs included: (src, dst), each (E,)."""
    device = num_atoms.device
    offsets = torch.cumsum(num_atoms, 0) - num_atoms
    n_edges = num_atoms * num_atoms
    graph_of_edge = torch.repeat_interleave(torch.arange(len(num_atoms), device=device), n_edges)
    edge_start = torch.cumsum(n_edges, 0) - n_edges
    local = torch.arange(int(n_edges.sum()), device=device) - edge_start[graph_of_edge]
    n = num_atoms[graph_of_edge]
    src = local // n + offsets[graph_of_edge]
    dst = local % n + offsets[graph_of_edge]
    return src, dst
