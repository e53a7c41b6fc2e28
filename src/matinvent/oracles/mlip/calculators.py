"""ASE calculators of the pretrained MLIPs: SevenNet-0 / SevenNet-l3i5 / CHGNet 0.3.0 from their wheels,
or a user's checkpoint file of the same architecture.

The pretrained weights ship inside the ``sevenn`` and ``chgnet`` wheels; nothing is downloaded.
A user checkpoint (``checkpoint=PATH``: a SevenNet ``.pth`` checkpoint or a CHGNet ``.pth.tar``)
is first opened with torch's weights-only unpickler (numpy arrays allowed, nothing executable),
so a file that would run code on loading is refused before either library sees it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTRA_HINT = "pip install 'matinvent[mlip]'"


@dataclass(frozen=True)
class ModelSpec:
    """A pretrained MLIP: its Python package, its name in that package, and its energy scale."""

    package: str
    pretrained: str
    mp2020_correction: bool  # True: raw VASP energies (put through MP2020); False: already MP2020-corrected


MODELS: dict[str, ModelSpec] = {
    "sevennet-0": ModelSpec("sevenn", "7net-0", True),
    "7net-0": ModelSpec("sevenn", "7net-0", True),
    "sevennet-l3i5": ModelSpec("sevenn", "7net-l3i5", True),
    "7net-l3i5": ModelSpec("sevenn", "7net-l3i5", True),
    "chgnet": ModelSpec("chgnet", "0.3.0", False),
}


def model_spec(model: str) -> ModelSpec:
    """The :class:`ModelSpec` of a model name (case-insensitive); ValueError names the known ones."""
    key = model.lower()
    if key not in MODELS:
        raise ValueError(f"unknown MLIP model {model!r}; choose one of {sorted(MODELS)}")
    return MODELS[key]


def require_package(package: str, what: str) -> None:
    """ImportError naming the ``mlip`` extra when ``package`` is not installed."""
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"{what} needs the '{package}' package: install the MLIP extra with {EXTRA_HINT}")


def _numpy_safe_globals() -> list[Any]:
    """numpy's array/dtype reconstructors (both module paths), the only globals a checkpoint may name."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [getattr(np.dtypes, name) for name in getattr(np.dtypes, "__all__", [])]
    return [
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        np.ndarray,
        np.dtype,
        *dtypes,
    ]


def load_weights_only(path: str | Path) -> Any:
    """The contents of a torch checkpoint, read with ``weights_only=True`` (tensors, numpy arrays, plain data).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a weights-only checkpoint (it names a class or function that
            unpickling would import or call); the message names the file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MLIP checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
        first = " ".join(str(exc).split())[:300]
        raise ValueError(f"MLIP checkpoint {path}: not loadable with weights_only=True ({first})") from exc


def load_calculator(model: str = "sevennet-0", device: str = "cpu", checkpoint: str | Path | None = None) -> Any:
    """The ASE calculator of ``model``: its pretrained weights, or ``checkpoint`` (same architecture).

    Args:
        model: a name of :data:`MODELS`; with ``checkpoint``, the architecture (``sevennet-*``: any
            SevenNet checkpoint; ``chgnet``: a CHGNet ``.pth.tar`` holding ``model.model_args`` and
            ``model.state_dict``).
        device: torch device.
        checkpoint: a user checkpoint file, checked with :func:`load_weights_only` first.
    """
    spec = model_spec(model)
    require_package(spec.package, f"MLIP model {model!r}")
    state = load_weights_only(checkpoint) if checkpoint is not None else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if spec.package == "sevenn":
            from sevenn.calculator import SevenNetCalculator

            if state is not None and not (isinstance(state, dict) and "model_state_dict" in state):
                raise ValueError(f"MLIP checkpoint {checkpoint}: not a SevenNet checkpoint (no 'model_state_dict')")
            # the file passed the weights-only check, so sevenn's own loader runs no foreign code
            return SevenNetCalculator(str(checkpoint) if checkpoint is not None else spec.pretrained, device=device)
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        if state is None:
            net = CHGNet.load(model_name=spec.pretrained, verbose=False, use_device=device)
        else:
            if not (isinstance(state, dict) and isinstance(state.get("model"), dict)):
                raise ValueError(f"MLIP checkpoint {checkpoint}: not a CHGNet checkpoint (no 'model' mapping)")
            net = CHGNet.from_dict(state["model"])
        return CHGNetCalculator(net, use_device=device)


def mlip_available() -> bool:
    """Whether the MLIP extra the default pipeline relaxes with is installed (SevenNet-0 and torch-sim)."""
    return all(importlib.util.find_spec(p) is not None for p in ("sevenn", "torch_sim"))
