"""The chemical-space options of ``matinvent sample`` and ``optimize`` (``--elements``, ``--natoms``, …)."""

from __future__ import annotations

import argparse

from matinvent.config_io import ConfigError
from matinvent.crystal.constraints import PRESETS, ChemConstraints


def add_constraint_arguments(parser: argparse.ArgumentParser) -> None:
    """The constraint options of ``matinvent sample`` and ``optimize``."""
    g = parser.add_argument_group("chemical-space constraints (enforced inside the sampler; all must hold)")
    g.add_argument("--elements", metavar="Li,Fe,P,O", help="allowed elements (default: all the prior knows)")
    g.add_argument("--exclude", metavar="Np,Pu", help="banned elements")
    g.add_argument("--chemsys", metavar="Li-Fe-P-O", help="exactly this chemical system: its elements, each present")
    g.add_argument("--max-elements", type=int, metavar="N", help="at most N distinct elements per crystal")
    g.add_argument("--natoms", metavar="MIN:MAX", help="atoms per crystal (inclusive; within the prior's range)")
    g.add_argument(
        "--preset", choices=sorted(PRESETS), help="no-radioactive: bans Tc, Pm and every element from Po (Z = 84) on"
    )


def constraints_from_args(args: argparse.Namespace) -> ChemConstraints:
    """The :class:`ChemConstraints` of the options added by :func:`add_constraint_arguments`; errors name the option."""
    keys = ("elements", "exclude", "chemsys", "max_elements", "natoms", "preset")
    data = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    try:
        return ChemConstraints.from_dict(data)
    except ConfigError as exc:
        message = str(exc)
        for k in keys:
            message = message.replace(f"constraints key '{k}'", "--" + k.replace("_", "-"))
        raise ConfigError(message) from exc
