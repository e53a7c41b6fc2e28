"""Many structures at once: batched MLIP single points and relaxations on torch-sim (SevenNet-0, CHGNet).

:class:`BatchedRelaxer` evaluates and relaxes lists of structures with the field's batched-MLIP
engine, ``torch-sim-atomistic``: one model call per step for every structure in flight, FIRE on
positions and cell through the Fréchet cell filter (``torch_sim.frechet_cell_fire``, ASE's FIRE
flavour), structures swapped out of the batch as each one finishes (``InFlightAutoBatcher``,
at most ``atoms_in_flight`` atoms at a time).

Every structure gets its own bounds and its own outcome, never an exception:

- converged: the largest atomic force and the largest cell force are below ``fmax`` (eV/Å);
- ``max_steps``: at most that many FIRE steps per structure (counted in rounds of
  ``steps_between_swaps``), then it leaves the batch unconverged;
- ``max_seconds``: a wall-clock bound per structure, counted from when it joins the batch (not from the
  start of the call, so structures queued behind others are not starved); past it, the structure leaves
  unconverged after the round in flight, with the reason "time limit";
- atoms closer than ``min_distance`` Å, an element the model does not know, or a non-finite energy
  at any point: NaN energy and the reason, the rest of the batch goes on.

Results are :class:`~matinvent.oracles.mlip.relaxed.Relaxed` records, the same as the one-at-a-time
ASE path (:class:`~matinvent.oracles.mlip.relax.MLIPRelaxer`) returns; energies are the model's raw
eV/atom. SevenNet models run through torch-sim's own wrapper; CHGNet, which torch-sim 0.3 does not
wrap, through a small wrapper over CHGNet's batched forward (:func:`_chgnet_model`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matinvent.oracles.base import StructureLike, as_structures
from matinvent.oracles.mlip.calculators import load_calculator, model_spec, require_package
from matinvent.oracles.mlip.relaxed import Relaxed, relaxable

TIME_LIMIT = "time limit"


@dataclass
class SinglePoint:
    """Energy (eV/atom), forces (N, 3) eV/Å and stress (3, 3) eV/Å³ (ASE's sign) of one structure; NaN + reason
    where it failed."""

    energy_per_atom: float
    forces: np.ndarray | None
    stress: np.ndarray | None
    reason: str = ""


def _sevennet_model(model: str, device: str, checkpoint: Any = None) -> Any:
    """torch-sim's SevenNet wrapper around a fresh copy of the pretrained model (the wrapper changes it in place)."""
    import sevenn.calculator
    import torch

    if not hasattr(sevenn.calculator, "torch_script_type"):  # torch-sim 0.3 reads a name sevenn 0.13 dropped
        sevenn.calculator.torch_script_type = torch.jit.ScriptModule
    from torch_sim.models.sevennet import SevenNetModel

    calc = load_calculator(model, device=device, checkpoint=checkpoint)
    return SevenNetModel(model=calc.model, device=device, dtype=torch.float32)


def _chgnet_model(model: str, device: str, checkpoint: Any = None) -> Any:
    """A torch-sim model over CHGNet's own batched forward (torch-sim 0.3 has no CHGNet wrapper).

    Energy, forces and stress are what CHGNet's ASE calculator reports: eV (its eV/atom × N), eV/Å,
    and its GPa stress × the calculator's ``stress_weight`` (eV/Å³).
    """
    import torch
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface

    calc = load_calculator(model, device=device, checkpoint=checkpoint)

    class CHGNetModel(ModelInterface):
        def __init__(self) -> None:
            super().__init__()
            self.model = calc.model
            self.stress_weight = float(calc.stress_weight)
            self._device, self._dtype = torch.device(device), torch.float32
            self._compute_stress, self._compute_forces = True, True
            self._memory_scales_with = "n_atoms"

        def forward(self, state: Any, **_: Any) -> dict[str, Any]:
            structures = ts.io.state_to_structures(state)
            graphs = [self.model.graph_converter(s).to(device) for s in structures]
            pred = self.model(graphs, task="efs")
            n = torch.tensor([len(s) for s in structures], dtype=self._dtype, device=self._device)
            energy = pred["e"].detach().to(self._dtype) * (n if self.model.is_intensive else 1)
            forces = torch.cat([f.detach() for f in pred["f"]]).to(self._dtype)
            stress = torch.stack([s.detach() for s in pred["s"]]).to(self._dtype) * self.stress_weight
            return {"energy": energy, "forces": forces, "stress": stress}

    return CHGNetModel()


@dataclass
class BatchedRelaxer:
    """Batched single points and FIRE relaxations (positions + cell) of many structures with one MLIP."""

    model: str = "sevennet-0"
    fmax: float = 0.05
    max_steps: int = 300
    max_seconds: float = 600.0
    atoms_in_flight: int = 100
    steps_between_swaps: int = 5
    min_distance: float = 0.5
    device: str = "cpu"
    checkpoint: str | None = None  # a user checkpoint of the model's architecture (checked weights-only)

    def __post_init__(self) -> None:
        require_package(model_spec(self.model).package, f"MLIP model {self.model!r}")
        require_package("torch_sim", "batched MLIP relaxation")
        for name in ("fmax", "max_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_steps", "atoms_in_flight", "steps_between_swaps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        self._model: Any = None

    @property
    def ts_model(self) -> Any:
        if self._model is None:
            build = _sevennet_model if model_spec(self.model).package == "sevenn" else _chgnet_model
            self._model = build(self.model, self.device, self.checkpoint)
        return self._model

    # -- input checks: what is refused before the model sees it

    def _usable(self, structures: list[Any]) -> tuple[list[Any], list[int], dict[int, str]]:
        """The checked, right-handed structures (``None`` where refused), the usable indices and the refusals."""
        known = {int(z) for z in getattr(getattr(self.ts_model, "model", None), "type_map", None) or ()}  # SevenNet
        checked: list[Any] = [None] * len(structures)
        ok, refused = [], {}
        for i, s in enumerate(structures):
            try:
                if s is None:
                    raise ValueError("structure could not be built")
                checked[i] = relaxable(s, self.min_distance)  # the one-at-a-time path's checks
            except ValueError as exc:
                refused[i] = str(exc)
                continue
            if known and (unknown := sorted({sp.symbol for sp in s.species if sp.Z not in known})):
                refused[i] = f"elements the model does not know: {', '.join(unknown)}"
            else:
                ok.append(i)
        return checked, ok, refused

    def _state(self, structures: list[Any]) -> Any:
        import torch
        import torch_sim as ts

        return ts.io.structures_to_state(structures, device=self.device, dtype=torch.float32)

    # -- single points

    def single_points(self, structures: Sequence[StructureLike]) -> list[SinglePoint]:
        """Energy, forces and stress of each structure, ``atoms_in_flight`` atoms per model call."""
        structures, ok, refused = self._usable(as_structures(structures))
        out = [SinglePoint(math.nan, None, None, refused.get(i, "")) for i in range(len(structures))]
        for chunk in self._chunks(ok, structures):
            try:
                res = self.ts_model(self._state([structures[i] for i in chunk]))
            except Exception as exc:  # noqa: BLE001 - one failed chunk costs its own structures
                for i in chunk:
                    out[i].reason = f"{type(exc).__name__}: {exc}"
                continue
            start = 0
            for k, i in enumerate(chunk):
                n = len(structures[i])
                energy = float(res["energy"][k]) / n
                forces = res["forces"][start : start + n].double().cpu().numpy()
                start += n
                if not math.isfinite(energy) or not np.isfinite(forces).all():
                    out[i].reason = "non-finite energy or forces"
                    continue
                out[i] = SinglePoint(energy, forces, res["stress"][k].double().cpu().numpy())
        return out

    def _chunks(self, indices: list[int], structures: list[Any]) -> list[list[int]]:
        chunks: list[list[int]] = [[]]
        atoms = 0
        for i in indices:
            if chunks[-1] and atoms + len(structures[i]) > self.atoms_in_flight:
                chunks.append([])
                atoms = 0
            chunks[-1].append(i)
            atoms += len(structures[i])
        return [c for c in chunks if c]

    # -- relaxations

    def relax(
        self, structures: Sequence[StructureLike], on_result: Callable[[int, Relaxed], None] | None = None
    ) -> list[Relaxed]:
        """One :class:`Relaxed` per structure; ``on_result(index, relaxed)`` the moment each one leaves the batch
        (so a caller can store it at once: a killed process loses only what was still in flight)."""
        structures, ok, refused = self._usable(as_structures(structures))
        out: list[Relaxed | None] = [None] * len(structures)

        def report(i: int, relaxed: Relaxed) -> None:
            out[i] = relaxed
            if on_result is not None:
                on_result(i, relaxed)

        for i, why in refused.items():
            report(i, Relaxed(None, math.nan, False, 0, why))
        try:
            if ok:
                self._relax_batch([structures[i] for i in ok], lambda k, r: report(ok[k], r))
        except Exception:  # noqa: BLE001 - one structure broke the batch: the rest one by one, so only it pays
            for i in ok:
                if out[i] is None:
                    report(i, self._relax_alone(structures[i]))
        return out  # type: ignore[return-value]

    def _relax_alone(self, structure: Any) -> Relaxed:
        got: list[Relaxed] = []
        try:
            self._relax_batch([structure], lambda k, r: got.append(r))
            return got[0]
        except Exception as exc:  # noqa: BLE001 - reported as this structure's reason
            return Relaxed(None, math.nan, False, 0, f"{type(exc).__name__}: {exc}")

    def _relax_batch(self, structures: list[Any], report: Callable[[int, Relaxed], None]) -> None:
        """FIRE on all ``structures``, at most ``atoms_in_flight`` atoms at a time; ``report(k, relaxed)`` as each
        one is done (converged, out of steps or time, or non-finite)."""
        import torch
        import torch_sim as ts

        model = self.ts_model
        init_fn, update_fn = ts.frechet_cell_fire(model=model)
        converged_fn = ts.generate_force_convergence_fn(force_tol=self.fmax, include_cell_forces=True)
        batcher = ts.InFlightAutoBatcher(
            model,
            memory_scales_with="n_atoms",
            max_memory_scaler=float(max(self.atoms_in_flight, max(len(s) for s in structures))),
            return_indices=True,
        )
        start = init_fn(self._state(structures))
        initial = (start.energy.detach().double().cpu() / start.n_atoms_per_system.cpu()).tolist()
        batcher.load_states(start)
        steps = np.zeros(len(structures), dtype=int)
        joined: dict[int, float] = {}  # when each structure entered the batch: its time bound counts from there
        state, done = None, None
        while (result := batcher.next_batch(state, done))[0] is not None:
            state, _, current = result
            indices = list(current)  # the batcher's own list changes on the next call
            start = time.monotonic()
            for i in indices:
                joined.setdefault(i, start)
            for _ in range(self.steps_between_swaps):
                state = update_fn(state)
            steps[indices] += self.steps_between_swaps
            now = time.monotonic()
            bad = ~torch.isfinite(state.energy)
            converged = converged_fn(state) & ~bad
            out_of_steps = torch.tensor([steps[i] >= self.max_steps for i in indices], device=bad.device)
            late = torch.tensor([now - joined[i] > self.max_seconds for i in indices], device=bad.device)
            done = converged | bad | out_of_steps | late
            finished = torch.nonzero(done).flatten().tolist()
            if not finished:
                continue
            n_atoms = state.n_atoms_per_system.tolist()
            final = ts.io.state_to_structures(state)
            for k in finished:
                i = indices[k]
                if bad[k]:
                    relaxed = Relaxed(None, math.nan, False, int(steps[i]), "non-finite energy during the relaxation")
                else:
                    energy = float(state.energy[k]) / n_atoms[k]
                    reason = None if converged[k] or not late[k] else TIME_LIMIT
                    relaxed = Relaxed(final[k], energy, bool(converged[k]), int(steps[i]), reason, initial[i])
                report(i, relaxed)
