"""Pretrained CGCNN property oracles: band gap, formation energy, bulk and shear moduli.

Each class declares its ``name``, ``unit`` and ``description`` (the registry of
:mod:`matinvent.oracles` reads them from here). Importing this module is cheap: the networks,
graphs and checkpoints live in :mod:`matinvent.oracles.cgcnn_model` (torch), imported when an
oracle first predicts; their names (``predict``, ``featurise``, …) are also reachable from here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from matinvent.oracles.base import Oracle

_MODEL_NAMES = (  # re-exported lazily from matinvent.oracles.cgcnn_model
    "CHECKPOINTS", "CGCNN", "CGCNNConfig", "CrystalGraph", "METAL_CLASS", "atom_table", "featurise", "get_model",
    "load_checkpoint", "predict",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from matinvent.oracles import cgcnn_model

        return getattr(cgcnn_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _predict(structures: list[Any], keys: list[str], device: Any) -> dict[str, np.ndarray]:
    from matinvent.oracles.cgcnn_model import predict

    return predict(structures, keys, device)


class _CGCNNOracle(Oracle):
    """A CGCNN regressor as an oracle; subclasses set ``model`` and may override ``transform``."""

    model: str = ""

    def __init__(self, device: Any = "cpu") -> None:
        self.device = device  # a torch device or its name

    def transform(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return self.transform(_predict(structures, [self.model], self.device)[self.model])


class CGCNNBandGap(_CGCNNOracle):
    """PBE band gap in eV: the CGCNN regressor (clipped at 0), 0 where the CGCNN classifier gives P(metal) > 0.5."""

    name = "band_gap"
    unit = "eV"
    description = "band gap, CGCNN regressor gated by the CGCNN metal classifier"
    model = "band_gap"

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        raw = _predict(structures, ["band_gap", "metal"], self.device)
        gap = np.clip(raw["band_gap"], 0.0, None)
        return np.where(raw["metal"] > 0.5, 0.0, gap)  # NaN P(metal) -> NaN gap


class CGCNNFormationEnergy(_CGCNNOracle):
    """Formation energy per atom in eV/atom (CGCNN, Materials Project 2017 reference energies)."""

    name = "formation_energy"
    unit = "eV/atom"
    description = "formation energy per atom, CGCNN"
    model = "formation_energy"


class CGCNNBulkModulus(_CGCNNOracle):
    """VRH bulk modulus in GPa: 10 ** (CGCNN prediction of log10 K / GPa)."""

    name = "bulk_modulus"
    unit = "GPa"
    description = "VRH bulk modulus, CGCNN (log10 GPa model)"
    model = "bulk_modulus"

    def transform(self, raw: np.ndarray) -> np.ndarray:
        return np.power(10.0, raw)


class CGCNNShearModulus(CGCNNBulkModulus):
    """VRH shear modulus in GPa: 10 ** (CGCNN prediction of log10 G / GPa)."""

    name = "shear_modulus"
    unit = "GPa"
    description = "VRH shear modulus, CGCNN (log10 GPa model)"
    model = "shear_modulus"


CGCNN_ORACLES: dict[str, type[Oracle]] = {
    cls.name: cls for cls in (CGCNNBandGap, CGCNNFormationEnergy, CGCNNBulkModulus, CGCNNShearModulus)
}

__all__ = [
    "CGCNN_ORACLES",
    "CGCNNBandGap",
    "CGCNNBulkModulus",
    "CGCNNFormationEnergy",
    "CGCNNShearModulus",
]
