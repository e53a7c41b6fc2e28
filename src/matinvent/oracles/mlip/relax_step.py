"""One structure's MLIP relaxation and the MLIP properties read off it, as one unit of work.

:class:`MLIPRelaxStep` is what the :class:`~matinvent.scoring.scorer.Scorer` runs per structure with
``relax="mlip"``: in-process, or built once per worker by an executor (``executor.map``) from an
:class:`~matinvent.scoring.executor.OracleSpec`, so a relaxation and the properties that need it (formation
energy, moduli) happen on the same worker, once. The result is small and picklable:
:class:`RelaxResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from matinvent.oracles.mlip.relaxed import right_handed, site_rmsd


@dataclass
class RelaxResult:
    """The relaxed structure (``None`` if the relaxation failed), MLIP property values by name, and why it failed;
    the energy drop (start − relaxed, eV/atom) and the sites' RMSD (Å, :func:`~.relaxed.site_rmsd`) of the
    relaxation, NaN where unknown."""

    structure: Any
    values: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    energy_drop: float = math.nan
    rmsd: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (structure as pymatgen's ``as_dict``; NaN as ``None``)."""
        return {
            "structure": None if self.structure is None else self.structure.as_dict(),
            "values": {k: _finite(v) for k, v in self.values.items()},
            "reason": self.reason,
            "energy_drop": _finite(self.energy_drop),
            "rmsd": _finite(self.rmsd),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RelaxResult:
        from pymatgen.core import Structure

        s = data.get("structure")
        values = {k: _float(v) for k, v in (data.get("values") or {}).items()}
        return cls(
            None if s is None else Structure.from_dict(s), values, str(data.get("reason") or ""),
            _float(data.get("energy_drop")), _float(data.get("rmsd")),
        )  # fmt: skip


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


class MLIPRelaxStep:
    """``apply(structure) -> RelaxResult``: relax with the MLIP of ``relax_kw``, then compute ``properties``.

    ``properties`` are names of ``matinvent.oracles.mlip.mlip_oracles`` (all sharing one relaxer, whose cache
    makes each property reuse the relaxation); ``relax_kw`` go to ``mlip_oracles`` (``model``, ``fmax``, ...).
    """

    def __init__(self, properties: tuple[str, ...] | list[str] = (), **relax_kw: Any) -> None:
        from matinvent.oracles.mlip import mlip_oracles

        self.oracles = mlip_oracles(**relax_kw)
        unknown = [p for p in properties if p not in self.oracles]
        if unknown:
            raise ValueError(f"no MLIP oracle for {', '.join(unknown)} (available: {', '.join(self.oracles)})")
        self.properties = tuple(properties)
        self.relaxer = self.oracles["formation_energy"].relaxer

    def apply(self, structure: Any) -> RelaxResult:
        (relaxed,) = self.relaxer.relax([structure])
        values = {p: float(self.oracles[p]([structure])[0]) for p in self.properties}
        if relaxed.structure is None:
            return RelaxResult(None, values, f"MLIP relaxation failed: {relaxed.error or 'no structure'}")
        try:
            rmsd = site_rmsd(right_handed(structure), relaxed.structure)  # the relaxation starts right-handed
        except (ValueError, AttributeError):  # not a pymatgen structure of the same sites
            rmsd = math.nan
        drop = relaxed.initial_energy_per_atom - relaxed.energy_per_atom
        return RelaxResult(relaxed.structure, values, "", drop, rmsd)

    def apply_many(self, structures: list[Any], on_result: Any = None) -> list[RelaxResult]:
        """:meth:`apply` of each structure, all relaxed at once when the relaxer's ``engine`` is ``batched``;
        ``on_result(index, result)`` the moment each one's relaxation and properties are known."""
        out: list[RelaxResult | None] = [None] * len(structures)

        def done(j: int, _: Any) -> None:
            out[j] = self.apply(structures[j])  # the relaxation is cached by now: only the properties run here
            if on_result is not None:
                on_result(j, out[j])

        self.relaxer.relax(structures, on_result=done)
        return out  # type: ignore[return-value]
