"""Experience replay: the best crystals so far (one per reduced formula) with their trajectories.

As in the paper (Eq. 18) an entry keeps the diversity-filtered reward its crystal got when it was
evaluated; that reward ranks the buffer and is the one replayed into the update (the raw reward
is kept alongside). Entries with filtered reward ≤ ``min_reward`` are not admitted; a formula
already present keeps its best entry; when full, the lowest is evicted. Each iteration ``sample``
draws up to ``n`` entries uniformly without replacement to join the update. Trajectories live in
files named by entry key under the run's ``replay/`` folder, so checkpointing the buffer writes
only its index; files of dropped entries are deleted only after the next checkpoint
(``collect_garbage``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from matinvent.rl.trajectories import CrystalTrajectory


@dataclass
class ReplayEntry:
    key: str  # unique id, also the trajectory file stem
    formula: str
    reward: float  # as scored
    filtered_reward: float  # after the diversity filter: what the buffer ranks and replays


class ReplayBuffer:
    def __init__(self, directory: str | Path, size: int = 100, min_reward: float = 0.1) -> None:
        if size < 0:
            raise ValueError(f"replay size must be >= 0, got {size}")
        self.dir = Path(directory)
        self.size, self.min_reward = size, min_reward
        self.entries: dict[str, ReplayEntry] = {}  # by formula

    def __len__(self) -> int:
        return len(self.entries)

    def add(
        self,
        key: str,
        formula: str,
        reward: float,
        trajectory: CrystalTrajectory,
        filtered_reward: float | None = None,
    ) -> bool:
        """Offer a crystal with its raw and filtered reward (None: no filter, the raw one); returns whether it
        entered the buffer."""
        filtered = float(reward if filtered_reward is None else filtered_reward)
        if self.size == 0 or not filtered > self.min_reward:
            return False
        old = self.entries.get(formula)
        if old is not None and old.filtered_reward >= filtered:
            return False
        if old is None and len(self.entries) >= self.size:
            worst = min(self.entries.values(), key=lambda e: (e.filtered_reward, e.key))
            if worst.filtered_reward >= filtered:
                return False
            self._remove(worst.formula)
        if old is not None:
            self._remove(formula)
        self.dir.mkdir(parents=True, exist_ok=True)
        trajectory.save(self.dir / f"{key}.safetensors")
        self.entries[formula] = ReplayEntry(key=key, formula=formula, reward=float(reward), filtered_reward=filtered)
        return True

    def purge(self, formulas: set[str]) -> None:
        """Drop entries whose formula reached the diversity filter's buffer limit."""
        for f in list(self.entries):
            if f in formulas:
                self._remove(f)

    def sample(self, n: int, rng: np.random.Generator) -> list[tuple[ReplayEntry, CrystalTrajectory]]:
        if n <= 0 or not self.entries:
            return []
        keys = sorted(self.entries)  # deterministic order before the draw
        pick = rng.choice(len(keys), size=min(n, len(keys)), replace=False)
        out = []
        for i in sorted(pick.tolist()):
            e = self.entries[keys[i]]
            out.append((e, CrystalTrajectory.load(self.dir / f"{e.key}.safetensors")))
        return out

    def _remove(self, formula: str) -> None:
        self.entries.pop(formula)  # its file stays until collect_garbage(): an older checkpoint may need it

    def collect_garbage(self) -> None:
        """Delete trajectory files no entry refers to (call after the buffer state is checkpointed)."""
        keep = {f"{e.key}.safetensors" for e in self.entries.values()}
        if self.dir.is_dir():
            for f in self.dir.glob("*.safetensors"):
                if f.name not in keep:
                    f.unlink()

    def state_dict(self) -> dict:
        return {"size": self.size, "min_reward": self.min_reward, "entries": [asdict(e) for e in self.entries.values()]}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.min_reward = int(state["size"]), float(state["min_reward"])
        # buffers saved before filtered rewards were kept hold the raw reward only: replay that, as they did
        self.entries = {e["formula"]: ReplayEntry(**{"filtered_reward": e["reward"], **e}) for e in state["entries"]}
