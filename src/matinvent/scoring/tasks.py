"""Tasks: which properties, which windows, how the rewards combine, which oracles; and the task files.

A task file (YAML; the shipped ones in ``matinvent/scoring/task_files/``) names the task, its
``properties`` (one :class:`~matinvent.scoring.rewards.Target` each), ``reduce`` (``min``, ``mean`` or
``weighted``), optional command ``oracles`` (:mod:`matinvent.oracles.command`), optional chemical-space
``constraints`` and ``relax: none`` for a task that scores crystals as generated (``auto``, the default,
leaves it to the run). Loading is torch-free and every error names the file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from matinvent.config_io import ConfigError, finite_number, load_yaml_file
from matinvent.crystal.constraints import ChemConstraints
from matinvent.scoring.rewards import REDUCTIONS, TARGET_KINDS, Target, combine

# columns of the run memory and the score CSV that a property (its own column) must not shadow
RESERVED = (
    "id", "run_id", "method", "iteration", "idx", "formula", "cif", "valid", "failed", "reason",
    "reward", "filtered_reward", "hit", "created", "relaxed_cif", "relax_e_hull", "relax_energy_drop",
    "relax_rmsd",
)  # fmt: skip
TASK_RELAX = ("auto", "none")
PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Task:
    """A named set of targets with a reduction; ``oracles`` holds user command-oracle specs by name."""

    name: str
    targets: tuple[Target, ...]
    reduce: str = "min"
    description: str = ""
    oracles: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""
    constraints: ChemConstraints | None = None  # chemical space the sampler keeps to (matinvent.crystal.constraints)
    # auto: the run's relax setting decides; none: the task scores crystals as generated (e.g. the stability task,
    # whose property is the energy of the unrelaxed structure), so a run's relax: auto settles to none for it
    relax: str = "auto"

    @property
    def properties(self) -> list[str]:
        return [t.prop for t in self.targets]

    def rewards(self, values: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reward, hit, failed) per crystal from ``values[prop]`` arrays (:func:`~.rewards.combine`)."""
        return combine(self.targets, values, self.reduce)

    def window_text(self) -> str:
        return "; ".join(f"{t.prop} {t.window()}" for t in self.targets)

    def build_oracles(self, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        """One oracle per property (except ``skip``): the task's own command oracles, else the registry."""
        from matinvent.oracles import CommandOracle, get_oracle

        out = {}
        for prop in self.properties:
            if prop in skip:
                continue
            if prop in self.oracles:
                out[prop] = CommandOracle(name=prop, **self.oracles[prop])
            else:
                out[prop] = get_oracle(prop)
        return out


# ----------------------------------------------------------------------------------- task files


def _property_name(prop: Any, src: str) -> str:
    key = f"task file {src}: key 'properties.{prop}'"
    if not isinstance(prop, str) or not PROPERTY_NAME.fullmatch(prop):
        raise ConfigError(f"{key}: a property name must be letters, digits and '_' (not starting with a digit)")
    if prop in RESERVED:
        raise ConfigError(f"{key}: '{prop}' is a reserved column name (reserved: {', '.join(RESERVED)})")
    return prop


def _target(prop: str, spec: Any, src: str) -> Target:
    key = f"task file {src}: key 'properties.{prop}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}' must be a mapping with 'target' and its window")
    allowed = {"target", "center", "tolerance", "threshold", "ramp", "weight", "ramp_below"}
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}' is not a known key (known: {', '.join(sorted(allowed))})")
    kind = spec.get("target")
    if kind not in TARGET_KINDS:
        raise ConfigError(f"{key}.target' must be one of {', '.join(TARGET_KINDS)}, got {kind!r}")
    need = ("center", "tolerance") if kind == "range" else ("threshold",)
    wrong = ("threshold",) if kind == "range" else ("center", "tolerance")
    for k in need:
        if k not in spec:
            raise ConfigError(f"{key}.{k}' is required for target '{kind}'")
    for k in wrong:
        if k in spec:
            raise ConfigError(f"{key}.{k}' does not apply to target '{kind}'")
    vals = {k: finite_number(f"{key}.{k}'", spec[k]) for k in need}
    if kind == "range" and vals["tolerance"] < 0:
        raise ConfigError(f"{key}.tolerance' must be >= 0, got {vals['tolerance']}")
    ramp = finite_number(f"{key}.ramp'", spec.get("ramp", 1.0), positive=True)
    weight = finite_number(f"{key}.weight'", spec.get("weight", 1.0), positive=True)
    ramp_below = None
    if "ramp_below" in spec:
        if kind != "range":
            raise ConfigError(f"{key}.ramp_below' applies to target 'range' only")
        ramp_below = finite_number(f"{key}.ramp_below'", spec["ramp_below"], positive=True)
    return Target(prop=prop, kind=kind, ramp=ramp, weight=weight, ramp_below=ramp_below, **vals)


def _command_oracle(name: str, spec: Any, src: str) -> dict[str, Any]:
    from matinvent.oracles.command import command_oracle_spec  # numpy: only for tasks that have command oracles

    return command_oracle_spec(spec, f"task file {src}: key 'oracles.{name}")


def _constraints(spec: Any, src: str) -> ChemConstraints | None:
    try:
        return ChemConstraints.from_dict(spec) if spec is not None else None
    except ConfigError as exc:
        raise ConfigError(f"task file {src}: key 'constraints': {exc}") from exc


def task_from_dict(data: Any, src: str = "<dict>") -> Task:
    """Validate a task mapping; every error names the offending key."""
    if not isinstance(data, dict):
        raise ConfigError(f"task file {src}: must be a mapping with 'name' and 'properties'")
    allowed = {"name", "description", "reduce", "properties", "oracles", "constraints", "relax"}
    for k in data:
        if k not in allowed:
            raise ConfigError(f"task file {src}: unknown key '{k}' (known: {', '.join(sorted(allowed))})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"task file {src}: key 'name' must be a non-empty string")
    props = data.get("properties")
    if not isinstance(props, dict) or not props:
        raise ConfigError(f"task file {src}: key 'properties' must map property names to targets")
    reduce = data.get("reduce", "min")
    if reduce not in REDUCTIONS:
        raise ConfigError(f"task file {src}: key 'reduce' must be one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    relax = data.get("relax", "auto")
    if relax not in TASK_RELAX:
        raise ConfigError(f"task file {src}: key 'relax' must be one of {', '.join(TASK_RELAX)}, got {relax!r}")
    oracles = data.get("oracles") or {}
    if not isinstance(oracles, dict):
        raise ConfigError(f"task file {src}: key 'oracles' must map names to command-oracle settings")
    return Task(
        name=name,
        targets=tuple(_target(_property_name(p, src), s, src) for p, s in props.items()),
        reduce=reduce,
        description=str(data.get("description", "")),
        oracles={str(k): _command_oracle(str(k), v, src) for k, v in oracles.items()},
        source=src,
        constraints=_constraints(data.get("constraints"), src),
        relax=relax,
    )


def _task_dir() -> Path:
    return Path(str(resources.files("matinvent") / "scoring" / "task_files"))


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in _task_dir().glob("*.yaml"))


def load_task(name_or_path: str | Path) -> Task:
    """A shipped task by name (``band_gap``, ``T1`` …) or a user's YAML task file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = _task_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown task '{name_or_path}' (shipped: {', '.join(builtin_tasks())}; or a YAML path)")
    return task_from_dict(load_yaml_file(path, "task file"), str(path))
