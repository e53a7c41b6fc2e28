"""Torch-free config I/O: one number syntax, YAML reading, bounds and dataclass validation.

One number syntax everywhere (configs, task files): ASCII decimal or scientific notation
(``12``, ``-0.5``, ``1e3``, ``2.5E-4``), written bare or quoted; YAML 1.1's octal, hex,
sexagesimal and ``1_000`` forms are not numbers. Only finite numbers are accepted, and every
numeric key has documented bounds (:class:`Bounds`). Loading a task or an RL config through this
module never imports torch or the model.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the key."""


# ------------------------------------------------------------------------------- number syntax

_INT = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def as_number(value: Any) -> int | float | None:
    """``value`` as a number, or ``None`` when it is not one.

    Numbers are ints and floats (not bools) and strings in the one number syntax (ASCII decimal
    or scientific: ``1e3`` is ``1000.0``; ``1_000``, ``0x10``, ``inf`` and non-ASCII digits are not).
    """
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value):
            return None
        return int(value) if _INT.fullmatch(value) else float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def finite_number(where: str, value: Any, positive: bool = False) -> float:
    """``value`` (the :func:`as_number` syntax) as a finite float, > 0 when ``positive``; else a
    :class:`ConfigError` that starts with ``where``."""
    number = as_number(value)
    if number is None:
        raise ConfigError(f"{where} must be a number, got {value!r}")
    value = float(number)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ConfigError(f"{where} must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return value


class _Loader(yaml.SafeLoader):
    """Safe YAML whose implicit ints and floats follow :func:`as_number` (``.inf``/``.nan`` stay floats)."""


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in (_INT_TAG, _FLOAT_TAG)]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT_TAG, re.compile(_INT.pattern + "$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT_TAG, re.compile(rf"(?:{_NUMBER.pattern}|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+.0123456789")
)


def _construct_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | float:
    text = str(loader.construct_scalar(node))
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    value = special.get(text.lower(), as_number(text))
    if value is None:
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a number", node.start_mark)
    return value


_Loader.add_constructor(_INT_TAG, _construct_number)
_Loader.add_constructor(_FLOAT_TAG, _construct_number)


def load_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """Parse a YAML file (numbers as :func:`as_number`); errors name ``what`` and the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError as exc:
        raise ConfigError(f"{path}: nested too deeply to be a {what}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not valid YAML: {' '.join(str(exc).split())}") from exc


# ------------------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class Bounds:
    """Allowed values of a numeric key: ``low ≤ x ≤ high`` (strict on a side marked open); always finite."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def text(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def check(self, key: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``key`` unless ``value`` (``None`` passes) lies inside."""
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value}")
        if value < self.low or (self.low_open and value == self.low):
            raise ConfigError(f"config key '{key}' must be {'>' if self.low_open else '>='} {self.low:g}, got {value}")
        if value > self.high or (self.high_open and value == self.high):
            raise ConfigError(f"config key '{key}' must be in {self.text()}, got {value}")


MAX_SEED = 2**32 - 1


def _check_value(key: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if typ is int:  # 1e3 is the integer 1000; 3.5 is not an integer
        number = as_number(value)
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            number = int(number)
        if not isinstance(number, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return number
    if typ is float:
        number = as_number(value)
        if number is None:
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(number)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(typ):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key '{key}' has an invalid value {value!r}")
    if dataclasses.is_dataclass(typ):
        return from_dict(typ, value, prefix=key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(typ) or (Any,)
        return [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}' (known keys in {where}: {', '.join(sorted(names))})")
        kwargs[key] = _check_value(prefix + key, value, hints[key])
    obj = cls(**kwargs)
    return obj


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key '{key}' must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")


def read_yaml(path: str | Path | None) -> Any:
    """The contents of a YAML config file (``{}`` for ``None`` or an empty file); errors name the file."""
    if path is None:
        return {}
    return load_yaml_file(path) or {}


def default_threads() -> int:
    """Torch intra-op threads of a run whose config says ``threads: 0``: half the CPUs this process may use (≥ 1).

    Two runs on one machine then each keep most of their speed; with every core each, torch's spinning OpenMP
    threads slowed both 4-5x (benchmarks/results/rl_speed.md). On 2 cores: 1 thread, 0.8x of 2 threads alone.
    """
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)
