"""A crystal data set packed once into flat tensors, so that batches are gathered by index.

``CrystalBatch.from_crystals`` concatenates Python records on every call; for training, the set is
packed once (Z and F of all crystals concatenated, L stacked) and may live on the training device.
``PackedCrystals.gather(idx)`` then builds the batch with a handful of tensor ops and no host sync:
the number of atoms of the batch is summed from a host copy of the atom counts, so that
``repeat_interleave`` gets its output size without reading the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from matinvent.crystal.batch import CrystalBatch
from matinvent.crystal.record import Crystal


@dataclass
class PackedCrystals:
    """n crystals with N_total atoms in all.

    Z: (N_total,) long; F: (N_total, 3) fractional; L: (n, 3, 3) Å, rows = lattice vectors;
    num_atoms: (n,) long; offsets: (n,) long, index of each crystal's first atom in Z and F;
    num_atoms_host: (n,) the atom counts on the CPU (sizes of gathered batches, no device read).
    """

    Z: torch.Tensor
    F: torch.Tensor
    L: torch.Tensor
    num_atoms: torch.Tensor
    offsets: torch.Tensor
    num_atoms_host: torch.Tensor

    @classmethod
    def from_crystals(cls, crystals: list[Crystal], dtype: torch.dtype = torch.float32) -> PackedCrystals:
        """Pack records; the tensors equal those of ``CrystalBatch.from_crystals`` (same dtype casts)."""
        if not crystals:
            raise ValueError("cannot pack an empty list of crystals")
        num_atoms = torch.tensor([c.num_atoms for c in crystals], dtype=torch.long)
        return cls(
            Z=torch.from_numpy(np.concatenate([c.Z for c in crystals])).long(),
            F=torch.from_numpy(np.concatenate([c.F for c in crystals])).to(dtype),
            L=torch.from_numpy(np.stack([c.L for c in crystals])).to(dtype),
            num_atoms=num_atoms,
            offsets=torch.cumsum(num_atoms, 0) - num_atoms,
            num_atoms_host=num_atoms,
        )

    def __len__(self) -> int:
        return int(self.num_atoms_host.shape[0])

    @property
    def device(self) -> torch.device:
        return self.Z.device

    def to(self, device: torch.device | str) -> PackedCrystals:
        """The packed tensors on ``device``; the host copy of the atom counts stays on the CPU."""
        moved = (getattr(self, k).to(device) for k in ("Z", "F", "L", "num_atoms", "offsets"))
        return PackedCrystals(*moved, num_atoms_host=self.num_atoms_host)

    def gather(self, idx: torch.Tensor, idx_host: torch.Tensor | None = None) -> CrystalBatch:
        """The batch of crystals ``idx`` (B,) in that order, equal to ``CrystalBatch.from_crystals``.

        ``idx`` may live on the device or the CPU; ``idx_host`` (its CPU copy, if at hand) saves
        the one device-to-host copy needed to size the batch.
        """
        if idx_host is None:
            idx_host = idx.cpu()
        total = int(self.num_atoms_host[idx_host].sum())
        dev = self.device
        idx = idx.to(dev)
        num = self.num_atoms[idx]
        batch = torch.repeat_interleave(torch.arange(len(idx), device=dev), num, output_size=total)
        first = torch.cumsum(num, 0) - num  # position of each crystal's first atom in the batch
        atom = self.offsets[idx][batch] + torch.arange(total, device=dev) - first[batch]
        return CrystalBatch(Z=self.Z[atom], F=self.F[atom], L=self.L[idx], batch=batch, num_atoms=num)

    def slice(self, start: int, stop: int) -> CrystalBatch:
        """Crystals ``start`` to ``stop`` (exclusive) as a batch."""
        stop = min(stop, len(self))
        return self.gather(torch.arange(start, stop, device=self.device), idx_host=torch.arange(start, stop))
