"""Chemical-space constraints on generated crystals, parsed and validated without torch.

A :class:`ChemConstraints` says which crystals the sampler may produce; all of its parts hold at once:

- ``elements``: the allowed elements (``None``: every element the prior knows);
- ``exclude``: banned elements, taken out of the allowed set (a preset such as ``no-radioactive``
  adds to it);
- ``chemsys``: a chemical system ``Li-Fe-P-O``: only its elements, and every one of them present;
- ``max_elements``: at most this many distinct elements per crystal;
- ``natoms``: the inclusive range (min, max) of atoms per crystal.

They are enforced inside the sampler (:mod:`matinvent.prior.type_constraints`), never by rejection.
Elements are held as symbols; :meth:`ChemConstraints.to_dict` is the canonical mapping stored with
a run (``config.constraints`` in ``run.json``), so ``--resume`` compares constraints exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ase.data import atomic_numbers, chemical_symbols

from matinvent.config_io import ConfigError

MAX_Z = len(chemical_symbols) - 1  # 118 (Og); index 0 is ASE's placeholder "X"
PRESETS: dict[str, frozenset[str]] = {
    # Tc and Pm have no stable isotope; from Po (Z = 84) on every element is radioactive
    "no-radioactive": frozenset(chemical_symbols[z] for z in (43, 61, *range(84, MAX_Z + 1))),
}
KEYS = ("elements", "exclude", "chemsys", "max_elements", "natoms", "preset")


def sort_by_z(symbols: Iterable[str]) -> list[str]:
    return sorted(symbols, key=lambda s: atomic_numbers[s])


def _symbols(key: str, value: Any, sep: str = ",") -> frozenset[str]:
    """Element symbols from a list or a ``sep``-separated string; unknown symbols name ``key``."""
    if isinstance(value, str):
        value = [s.strip() for s in value.split(sep) if s.strip()]
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise ConfigError(f"constraints key '{key}' must be a list of element symbols, got {value!r}")
    out = set()
    for s in value:
        if not isinstance(s, str) or s not in atomic_numbers or s == "X":
            hint = (
                f" (symbols are case-sensitive: {s.capitalize()}?)"
                if isinstance(s, str) and s.capitalize() in atomic_numbers
                else ""
            )
            raise ConfigError(f"constraints key '{key}': unknown element symbol {s!r}{hint}")
        out.add(s)
    return frozenset(out)


def _integer(key: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"constraints key '{key}' must be an integer, got {value!r}")
    return value


def _natoms(value: Any) -> tuple[int, int]:
    """``(min, max)`` from ``[min, max]``, ``"min:max"`` or a single count."""
    if isinstance(value, str):
        value = value.split(":") if ":" in value else [value, value]
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"constraints key 'natoms' must be [min, max] or 'MIN:MAX', got {value!r}")
    lo, hi = (_integer("natoms", v) for v in value)
    if lo < 1:
        raise ConfigError(f"constraints key 'natoms': min must be >= 1, got {lo}")
    if lo > hi:
        raise ConfigError(f"constraints key 'natoms': min {lo} > max {hi}")
    return lo, hi


@dataclass(frozen=True)
class ChemConstraints:
    """Constraints on sampled crystals (see the module docstring); validated on construction.

    ``elements``/``exclude`` accept any iterable of symbols or a comma-separated string,
    ``chemsys`` a dash-separated string (``"Li-Fe-P-O"``) or an iterable; ``natoms`` is (min, max).
    """

    elements: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    chemsys: str | None = None
    max_elements: int | None = None
    natoms: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.elements is not None:
            set_(self, "elements", _symbols("elements", self.elements))
            if not self.elements:
                raise ConfigError("constraints key 'elements' must name at least one element")
        set_(self, "exclude", _symbols("exclude", self.exclude))
        if self.chemsys is not None:
            system = _symbols("chemsys", self.chemsys, sep="-")
            if not system:
                raise ConfigError(f"constraints key 'chemsys' must be a system like 'Li-Fe-P-O', got {self.chemsys!r}")
            set_(self, "chemsys", "-".join(sorted(system)))  # pymatgen's chemical_system: alphabetical
        if self.max_elements is not None:
            set_(self, "max_elements", _integer("max_elements", self.max_elements))
            if self.max_elements < 1:
                raise ConfigError(f"constraints key 'max_elements' must be >= 1, got {self.max_elements}")
        if self.natoms is not None:
            set_(self, "natoms", _natoms(self.natoms))
        self._check_consistent()

    def _check_consistent(self) -> None:
        allowed = self.allowed
        if not allowed:
            raise ConfigError(
                "constraints: no element is left: every element of 'elements' is in 'exclude' (or a preset)"
            )
        required = self.required
        if required - allowed:
            bad = ", ".join(sort_by_z(required - allowed))
            why = "excluded" if required & self.exclude else "not in 'elements'"
            raise ConfigError(f"constraints key 'chemsys': {bad} {why}, but a chemical system needs all its elements")
        if self.max_elements is not None and self.max_elements < len(required):
            raise ConfigError(
                f"constraints key 'max_elements' ({self.max_elements}) is below the {len(required)} elements "
                f"of chemsys {self.chemsys}"
            )
        if self.natoms is not None and self.natoms[1] < len(required):
            raise ConfigError(
                f"constraints key 'natoms': max {self.natoms[1]} atoms cannot hold the {len(required)} elements "
                f"of chemsys {self.chemsys}"
            )

    # --- derived sets ------------------------------------------------------------------------
    @property
    def allowed(self) -> frozenset[str]:
        """Symbols the sampler may place (Z 1..118, before the prior's own vocabulary)."""
        base = self.elements if self.elements is not None else frozenset(chemical_symbols[1:])
        if self.chemsys is not None:
            base = base & self.required
        return base - self.exclude

    @property
    def required(self) -> frozenset[str]:
        """Symbols every crystal must contain (the chemical system's), else empty."""
        return frozenset(self.chemsys.split("-")) if self.chemsys else frozenset()

    @property
    def active(self) -> bool:
        """True when anything is constrained."""
        return bool(
            self.elements is not None or self.exclude or self.chemsys or self.max_elements or self.natoms is not None
        )

    def allows(self, symbols: list[str]) -> bool:
        """Whether a crystal with these atoms (one symbol per atom) satisfies every constraint."""
        distinct = set(symbols)
        n = len(symbols)
        return (
            distinct <= self.allowed
            and self.required <= distinct
            and (self.max_elements is None or len(distinct) <= self.max_elements)
            and (self.natoms is None or self.natoms[0] <= n <= self.natoms[1])
        )

    # --- I/O ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The canonical mapping (symbols by Z, every key present), as stored with a run."""
        return {
            "elements": sort_by_z(self.elements) if self.elements is not None else None,
            "exclude": sort_by_z(self.exclude),
            "chemsys": self.chemsys,
            "max_elements": self.max_elements,
            "natoms": list(self.natoms) if self.natoms is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ChemConstraints:
        """Build from a mapping with the keys of ``KEYS`` (``None``/empty: unconstrained).

        ``preset`` (a name or a list of names from ``PRESETS``) adds its elements to ``exclude``.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"constraints must be a mapping with keys {', '.join(KEYS)}, got {data!r}")
        for key in data:
            if key not in KEYS:
                raise ConfigError(f"unknown constraints key '{key}' (known: {', '.join(KEYS)})")
        exclude = set(_symbols("exclude", data.get("exclude") or []))
        presets = data.get("preset") or []
        for name in [presets] if isinstance(presets, str) else presets:
            if name not in PRESETS:
                raise ConfigError(f"constraints key 'preset': unknown preset {name!r} (known: {', '.join(PRESETS)})")
            exclude |= PRESETS[name]
        return cls(
            elements=data.get("elements"),
            exclude=frozenset(exclude),
            chemsys=data.get("chemsys"),
            max_elements=data.get("max_elements"),
            natoms=data.get("natoms"),
        )

    def combine(self, other: ChemConstraints) -> ChemConstraints:
        """Constraints that hold when both ``self`` and ``other`` do (e.g. a task file's and a config's)."""
        if self.chemsys and other.chemsys and self.chemsys != other.chemsys:
            raise ConfigError(
                f"constraints key 'chemsys': two different systems given ({self.chemsys}, {other.chemsys})"
            )
        given = [e for e in (self.elements, other.elements) if e is not None]
        counts = [k for k in (self.max_elements, other.max_elements) if k is not None]
        natoms = [r for r in (self.natoms, other.natoms) if r is not None]
        lo, hi = (max(r[0] for r in natoms), min(r[1] for r in natoms)) if natoms else (None, None)
        if natoms and lo > hi:
            raise ConfigError(f"constraints key 'natoms': the ranges {natoms[0]} and {natoms[1]} do not overlap")
        return ChemConstraints(
            elements=frozenset.intersection(*given) if given else None,
            exclude=self.exclude | other.exclude,
            chemsys=self.chemsys or other.chemsys,
            max_elements=min(counts) if counts else None,
            natoms=(lo, hi) if natoms else None,
        )


def merged_constraints(*sources: Any) -> ChemConstraints:
    """The combination of several constraint mappings or :class:`ChemConstraints` (``None`` entries skipped)."""
    out = ChemConstraints()
    for src in sources:
        if src is not None:
            out = out.combine(src if isinstance(src, ChemConstraints) else ChemConstraints.from_dict(src))
    return out
