"""Prior checkpoints: a folder with ``model.safetensors`` and the ``config.json`` that rebuilds it.

``config.json`` holds the denoiser and diffusion configs, the atom-count histogram and free-form
training information. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from matinvent.config import ConfigError, from_dict
from matinvent.crystal_diffusion import CrystalDiffusion, DiffusionConfig
from matinvent.denoiser import DenoiserConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
DEFAULT_PRIOR = "mp20_masked"  # best chemistry (masked atom types; issue #10): matinvent sample
FAST_PRIOR = "mp20_masked"  # also the cheap one (6 x 128): the default for RL on a CPU (matinvent optimize)


def bundled_priors() -> list[str]:
    root = Path(str(resources.files("matinvent") / "checkpoints"))
    return sorted(p.name for p in root.iterdir() if (p / CONFIG).exists())


def default_checkpoint_path(name: str = DEFAULT_PRIOR) -> Path:
    """A prior bundled inside the package (default: the best-quality one)."""
    return Path(str(resources.files("matinvent") / "checkpoints" / name))


def resolve_checkpoint(name_or_path: str | Path | None, default: str = DEFAULT_PRIOR) -> Path:
    """A checkpoint folder from a path, a bundled prior's name (``mp20_masked``, ``mp20_base``,
    ``mp20_small``) or ``None``."""
    if name_or_path is None:
        return default_checkpoint_path(default)
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in bundled_priors():
        return default_checkpoint_path(str(name_or_path))
    return path


def save_prior(model: CrystalDiffusion, directory: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write weights + config to ``directory`` (created); returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": "matinvent-prior/1",
        "denoiser": model.denoiser_config.__dict__,
        "diffusion": model.config.__dict__,
        "natoms_prob": model.natoms_prob.tolist(),
        "info": info or {},
    }
    tmp = directory / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(directory / WEIGHTS)
    (directory / CONFIG).write_text(json.dumps(config, indent=2))
    return directory


def load_prior(directory: str | Path | None = None, device: str | torch.device = "cpu") -> CrystalDiffusion:
    """Rebuild a prior from a checkpoint folder or bundled prior name (default: the bundled ``mp20_masked``)."""
    directory = resolve_checkpoint(directory)
    cfg_path, w_path = directory / CONFIG, directory / WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(
            f"{directory} is not a matinvent checkpoint (needs {CONFIG} and {WEIGHTS}; "
            f"bundled priors: {', '.join(bundled_priors())})"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not valid JSON: {exc}") from exc
    for key in ("denoiser", "diffusion"):
        if key not in config:
            raise ConfigError(f"{cfg_path}: missing key '{key}'")
    model = CrystalDiffusion(
        from_dict(DenoiserConfig, config["denoiser"], "denoiser."),
        from_dict(DiffusionConfig, config["diffusion"], "diffusion."),
    )
    state = load_file(str(w_path))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ConfigError(f"{w_path}: weights do not match {cfg_path}: {exc}") from exc
    if missing or unexpected:
        raise ConfigError(f"{w_path}: weights do not match config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()


def checkpoint_info(directory: str | Path | None = None) -> dict[str, Any]:
    directory = resolve_checkpoint(directory)
    return json.loads((directory / CONFIG).read_text()).get("info", {})
