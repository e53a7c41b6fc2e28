"""The Python API: sample crystals from a prior, score structures for a task, run an optimisation.

    import matinvent as mi

    prior = mi.load_prior("mp20_masked")                 # a bundled prior, or a checkpoint folder
    crystals = prior.sample(8, seed=0, steps=25)         # list of pymatgen Structure
    table = mi.score(crystals, "density")                # pandas DataFrame, one row per structure
    run = mi.optimize("density", budget=32, out="runs/api", batch_size=16)
    run.hits()                                           # the distinct hits, with their structures

Structures may be pymatgen ``Structure``, ASE ``Atoms`` or :class:`~matinvent.crystal.record.Crystal`
objects, or a path (a folder of CIFs, an extxyz file, a CDVAE CSV). Tasks are a shipped name
(:func:`tasks`), a task YAML file or a :class:`~matinvent.scoring.tasks.Task`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pymatgen.core import Structure

    from matinvent.crystal.constraints import ChemConstraints
    from matinvent.prior.model import CrystalDiffusion
    from matinvent.rl.config import RLConfig
    from matinvent.scoring.tasks import Task

DEFAULT_METHOD = "matinvent"  # the paper's Eq. 17 with our stabilisers (docs/rl-settings.md)


# ----------------------------------------------------------------------------------- tasks


def tasks() -> list[str]:
    """Names of the shipped tasks (``matinvent tasks`` lists their windows)."""
    from matinvent.scoring.tasks import builtin_tasks

    return builtin_tasks()


def load_task(task: str | Path | Task) -> Task:
    """A :class:`~matinvent.scoring.tasks.Task` from a shipped name or a YAML path (a ``Task`` is returned as is)."""
    from matinvent.scoring.tasks import Task
    from matinvent.scoring.tasks import load_task as _load

    return task if isinstance(task, Task) else _load(task)


# ----------------------------------------------------------------------------------- priors


@dataclass
class Prior:
    """A loaded crystal diffusion prior: ``model`` (:class:`~matinvent.prior.model.CrystalDiffusion`)
    and the checkpoint folder it came from."""

    model: CrystalDiffusion
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def constraints(self) -> ChemConstraints:
        """The chemical-space constraints this prior was fine-tuned under (inactive for a pretrained one)."""
        from matinvent.prior.checkpoint import prior_constraints

        return prior_constraints(self.path)

    def sample(
        self,
        n: int,
        seed: int = 0,
        constraints: ChemConstraints | Mapping[str, Any] | None = None,
        steps: int | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> list[Structure]:
        """``n`` crystals as pymatgen Structures, reproducible for (seed, steps, batch_size).

        ``steps``: reverse sampler steps (default: the checkpoint's ``sample_steps``); ``constraints``: a
        :class:`~matinvent.crystal.constraints.ChemConstraints` or its mapping (``{"exclude": ["O"], "max_elements":
        3, "natoms": [4, 12], "preset": "no-radioactive"}`` …), enforced inside the sampler so every crystal
        satisfies it, together with those the prior was fine-tuned under (:attr:`constraints`).
        Degenerate samples (no buildable cell) are left out: the list may be shorter than ``n``.
        """
        from matinvent.crystal.constraints import merged_constraints
        from matinvent.prior.sampler import sample_crystals

        constraints = merged_constraints(self.constraints, constraints)
        crystals = sample_crystals(
            self.model, n, seed=seed, steps=steps, batch_size=batch_size, progress=progress, constraints=constraints
        )
        return [c.to_structure() for c in crystals if c is not None]

    def __repr__(self) -> str:
        return f"Prior({self.name!r}, type_diffusion={self.model.config.type_diffusion!r})"


def load_prior(name_or_path: str | Path | None = None, device: str = "cpu") -> Prior:
    """A bundled prior by name (``mp20_masked`` — the default —, ``mp20_base``, ``mp20_small``) or a
    checkpoint folder (e.g. ``RUN/agent`` of an optimisation); raises naming the missing file."""
    from matinvent.prior.checkpoint import load_prior as _load
    from matinvent.prior.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(name_or_path)
    return Prior(_load(path, device=device), path)


# ----------------------------------------------------------------------------------- scoring


def _structure_input(structures: Any, max_atoms: int | None) -> tuple[list[str], list[Any], list[str]]:
    """(ids, structures, read reasons) of a path, one structure or a sequence of them."""
    from ase import Atoms

    from matinvent.crystal.record import Crystal
    from matinvent.oracles.base import as_structures

    if isinstance(structures, str | Path):
        from matinvent.io.structure_files import read_structure_items

        return tuple(read_structure_items(structures, max_atoms=max_atoms))
    if isinstance(structures, Crystal | Atoms) or hasattr(structures, "frac_coords"):  # one structure
        structures = [structures]
    if not isinstance(structures, Sequence):
        structures = list(structures)
    converted = as_structures(structures)  # TypeError naming the item for anything else
    return [str(i) for i in range(len(converted))], converted, [""] * len(converted)


def score(
    structures: Any,
    task: str | Path | Task,
    validity: str = "physical",
    relax: str | None = "auto",
    mlip_model: str = "sevennet-0",
    timeout_s: float | None = None,
    max_atoms: int | None = None,
    stability: str = "auto",
) -> pd.DataFrame:
    """Properties, reward and hit of each structure for ``task``, as ``matinvent score`` writes them.

    Columns: ``id`` (the file / frame / row id of a path, else the position), ``formula``, one per
    task property (its oracle's unit), ``reward``, ``hit`` (0/1), ``valid`` (0/1: passed the
    ``validity`` gate and reached the oracles), ``reason``. ``relax="mlip"``: relax → gate → score, the
    properties of the ``mlip_model``-relaxed structures, with ``relax_e_hull``, ``relax_energy_drop`` and ``relax_rmsd``
    columns; ``"none"``/None: the structures as given; ``"auto"`` (default): mlip when the MLIP extra is
    installed. ``stability="hull"`` (auto: when relaxing): a hit also needs E_hull ≤ 0.1 eV/atom.
    ``max_atoms`` bounds what is read from a path (default: the readers' limit).
    """
    from matinvent.crystal.checks import MAX_ATOMS
    from matinvent.scoring.scorer import Scorer, resolve_pipeline, scores_table

    task = load_task(task)
    ids, structs, reasons = _structure_input(structures, MAX_ATOMS if max_atoms is None else max_atoms)
    relax, target = resolve_pipeline(relax, stability, task)
    relax_kw = {"model": mlip_model, "engine": "batched"} if relax == "mlip" else {}
    scorer = Scorer(task, relax=relax, validity=validity, timeout_s=timeout_s, stability=target, **relax_kw)
    try:
        scores = scorer(structs)
    finally:
        scorer.close()
    return scores_table(ids, scores.structures, scores, reasons)


# ----------------------------------------------------------------------------------- optimisation


@dataclass
class RunResult:
    """An optimisation's run folder and its summary (``summary.json``: hits, Burden, diversity …)."""

    path: Path
    summary: dict[str, Any] = field(repr=False)

    def memory(self) -> pd.DataFrame:
        """Every sampled crystal of the run (:func:`matinvent.io.run_memory.read_memory`)."""
        from matinvent.io.run_memory import read_memory

        return read_memory(self.path)

    def hits(self, distinct: bool = True) -> pd.DataFrame:
        """The hits, best reward first (one per formula with ``distinct``), with a ``structure`` column (the relaxed
        structure when the loop relaxed, else the generated one; ``cif`` keeps the generated one)."""
        from matinvent.crystal.record import Crystal
        from matinvent.io.export import select_rows

        rows = select_rows(self.memory(), hits_only=True, distinct=distinct)
        relaxed = rows["relaxed_cif"] if "relaxed_cif" in rows else [None] * len(rows)
        rows["structure"] = [  # the structure the properties refer to: the relaxed one when the loop relaxed
            Crystal.from_cif(r if isinstance(r, str) and r.strip() else c, max_atoms=None).to_structure()
            for c, r in zip(rows["cif"], relaxed, strict=True)
        ]
        return rows

    def agent(self, device: str = "cpu") -> Prior:
        """The fine-tuned model (``RUN/agent``) as a :class:`Prior`."""
        return load_prior(self.path / "agent", device=device)

    def __repr__(self) -> str:
        keys = ("task", "method", "evaluations", "hits", "burden")
        return f"RunResult({str(self.path)!r}, " + ", ".join(f"{k}={self.summary.get(k)!r}" for k in keys) + ")"


def _config(config: str | Path | RLConfig | dict[str, Any] | None, overrides: dict[str, Any]) -> RLConfig:
    """An RLConfig from a YAML path / RLConfig / mapping / ``None`` with ``overrides`` applied (validated)."""
    from matinvent.config_io import to_dict
    from matinvent.rl.config import PRESETS, RLConfig, load_rl_config, rl_config_from_dict, with_preset

    overrides = dict(overrides)
    preset = overrides.pop("preset", None)  # a preset override: its values under the config's own keys
    if isinstance(config, RLConfig):
        base = to_dict(config)
        if preset is not None:
            base = {**base, **PRESETS.get(preset, {}), "preset": preset}
    elif isinstance(config, dict):
        base = dict(config) if preset is None else with_preset({**config, "preset": preset})
    else:
        base = to_dict(load_rl_config(config, preset=preset))
    return rl_config_from_dict({**base, **overrides})


def optimize(
    task: str | Path | Task,
    budget: int,
    out: str | Path,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
    config: str | Path | RLConfig | dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> RunResult:
    """RL fine-tuning of a prior toward ``task`` until ``budget`` oracle evaluations (``matinvent optimize``).

    ``config``: an optimisation YAML, an ``RLConfig`` or a mapping; ``overrides`` set single keys of it
    (``prior="mp20_small"`` or a :class:`Prior`, ``batch_size=16``, ``sample_steps=10``, ``recheck_n=0``,
    ``constraints={"preset": "no-radioactive"}`` …); an unknown key raises
    :class:`~matinvent.config_io.ConfigError` naming it. ``out`` is the run folder (refused when it holds a
    run, unless ``resume``).
    """
    from matinvent.rl.loop import optimize as _optimize

    if isinstance(overrides.get("prior"), Prior):  # a loaded prior: its checkpoint folder
        overrides["prior"] = str(overrides["prior"].path)
    cfg = _config(config, overrides)
    summary = _optimize(load_task(task), method, budget, seed, out, cfg, resume=resume, progress=progress)
    return RunResult(Path(out), summary)
