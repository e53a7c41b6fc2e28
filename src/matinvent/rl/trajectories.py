"""Per-crystal denoising trajectories: split from a sampled batch, stored, and restacked per step.

A trajectory of S reverse steps holds the states M_s = (A, F, L) for s = 0..S (s = 0 is the
noise, s = S the final crystal, L in the diffusion frame) and the corrector mid-points F_mid
for s = 0..S−1. Step s is the transition M_s → (F_mid_s, M_{s+1}) at diffusion times
``ts[s] → ts[s+1]`` (0 after the last). Trajectories of any batches with the same schedule can
be restacked into one :class:`Transition` for a step, so the agent's log-probabilities and KL
of stored (replayed) actions are computed in one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from matinvent.crystal.batch import batch_index
from matinvent.prior.transitions import Trajectory, Transition


@dataclass
class CrystalTrajectory:
    """A: (S+1, n, K) type logits-space states; F: (S+1, n, 3); L: (S+1, 3, 3); F_mid: (S, n, 3).

    ``logp`` (S, C): per-component log-probs of the actions under the policy that sampled them
    (for PPO ratios); ``logp_N`` (1,): log p of the atom count when N is an action.
    """

    A: torch.Tensor
    F: torch.Tensor
    L: torch.Tensor
    F_mid: torch.Tensor
    logp: torch.Tensor | None = None
    logp_N: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        return self.F_mid.shape[0]

    @property
    def num_atoms(self) -> int:
        return self.F.shape[1]

    def save(self, path: str | Path) -> None:
        tensors = {"A": self.A, "F": self.F, "L": self.L, "F_mid": self.F_mid}
        tensors.update({k: v for k, v in (("logp", self.logp), ("logp_N", self.logp_N)) if v is not None})
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> CrystalTrajectory:
        t = load_file(str(path))
        return cls(A=t["A"], F=t["F"], L=t["L"], F_mid=t["F_mid"], logp=t.get("logp"), logp_N=t.get("logp_N"))


def split_trajectory(traj: Trajectory) -> list[CrystalTrajectory]:
    """One :class:`CrystalTrajectory` per crystal of a batch sampled with ``return_trajectory``."""
    if not traj.transitions:
        raise ValueError("the trajectory holds no transitions (sample with return_trajectory=True)")
    trs = traj.transitions
    A = torch.stack([tr.A for tr in trs] + [trs[-1].A_next]).cpu()
    F = torch.stack([tr.F for tr in trs] + [trs[-1].F_next]).cpu()
    L = torch.stack([tr.L for tr in trs] + [trs[-1].L_next]).cpu()
    F_mid = torch.stack([tr.F_mid for tr in trs]).cpu()
    out = []
    start = 0
    for i, n in enumerate(traj.num_atoms.tolist()):
        sl = slice(start, start + n)
        out.append(
            CrystalTrajectory(A=A[:, sl].clone(), F=F[:, sl].clone(), L=L[:, i].clone(), F_mid=F_mid[:, sl].clone())
        )
        start += n
    return out


def stack_step(
    trajs: list[CrystalTrajectory], s: int, ts: list[int], device: str | torch.device = "cpu"
) -> tuple[Transition, torch.Tensor, torch.Tensor]:
    """(transition, batch, num_atoms) of step ``s`` for all ``trajs`` (same schedule ``ts``)."""
    if any(tr.steps != len(ts) for tr in trajs):
        raise ValueError(f"trajectories of {sorted({tr.steps for tr in trajs})} steps, schedule has {len(ts)}")
    num_atoms = torch.tensor([tr.num_atoms for tr in trajs], device=device)

    def cat(name: str, k: int) -> torch.Tensor:
        return torch.cat([getattr(tr, name)[k] for tr in trajs]).to(device)

    def stack_L(k: int) -> torch.Tensor:
        return torch.stack([tr.L[k] for tr in trajs]).to(device)

    t_prev = ts[s + 1] if s + 1 < len(ts) else 0
    tr = Transition(
        t=ts[s],
        t_prev=t_prev,
        A=cat("A", s),
        F=cat("F", s),
        L=stack_L(s),
        F_mid=cat("F_mid", s),
        A_next=cat("A", s + 1),
        F_next=cat("F", s + 1),
        L_next=stack_L(s + 1),
    )
    return tr, batch_index(num_atoms), num_atoms
