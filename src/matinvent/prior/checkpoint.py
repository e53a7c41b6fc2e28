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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from matinvent.config_io import ConfigError, from_dict
from matinvent.crystal.constraints import ChemConstraints
from matinvent.prior.denoiser import DenoiserConfig
from matinvent.prior.diffusion_config import DiffusionConfig
from matinvent.prior.model import CrystalDiffusion
from matinvent.prior.pretrain_config import PretrainConfig, validate_pretrain

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PRIOR_FORMAT = "matinvent-prior/1"
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
        "format": PRIOR_FORMAT,
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


def _read_config(cfg_path: Path) -> dict[str, Any]:
    """The mapping in a prior's ``config.json``; every problem is a :class:`ConfigError` naming the file."""
    try:
        config = json.loads(cfg_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not UTF-8 text (byte at offset {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not valid JSON: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{cfg_path}: must hold a JSON object, got {type(config).__name__}")
    fmt = config.get("format", PRIOR_FORMAT)
    if fmt != PRIOR_FORMAT:
        raise ConfigError(f"{cfg_path}: format {fmt!r} is not {PRIOR_FORMAT!r}")
    return config


def check_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise :class:`ConfigError` naming ``path`` and the tensor when a floating tensor holds NaN or Inf."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{path}: tensor '{name}' holds non-finite values (NaN or Inf)")
    prob = state.get("natoms_prob")
    if isinstance(prob, torch.Tensor) and (bool((prob < 0).any()) or not float(prob.sum()) > 0):
        raise ConfigError(f"{path}: tensor 'natoms_prob' is not a distribution (negative entries or zero sum)")


def load_prior(directory: str | Path | None = None, device: str | torch.device = "cpu") -> CrystalDiffusion:
    """Rebuild a prior from a checkpoint folder or bundled prior name (default: the bundled ``mp20_masked``).

    Raises ``FileNotFoundError`` when a file is missing and :class:`ConfigError` naming the file when
    ``config.json`` or ``model.safetensors`` cannot be read, do not match, or hold non-finite weights.
    """
    directory = resolve_checkpoint(directory)
    cfg_path, w_path = directory / CONFIG, directory / WEIGHTS
    if not cfg_path.exists() or not w_path.exists():
        raise FileNotFoundError(
            f"{directory} is not a matinvent checkpoint (needs {CONFIG} and {WEIGHTS}; "
            f"bundled priors: {', '.join(bundled_priors())})"
        )
    config = _read_config(cfg_path)
    for key in ("denoiser", "diffusion"):
        if key not in config:
            raise ConfigError(f"{cfg_path}: missing key '{key}'")
    try:
        den = from_dict(DenoiserConfig, config["denoiser"], "denoiser.")
        diff = from_dict(DiffusionConfig, config["diffusion"], "diffusion.")
        validate_pretrain(PretrainConfig(model=den, diffusion=diff))  # bounds before allocating anything
        model = CrystalDiffusion(den, diff)
    except (ValueError, RuntimeError, TypeError) as exc:  # ConfigError included
        raise ConfigError(f"{cfg_path}: {exc}") from exc
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"{w_path}: not a readable safetensors file ({exc})") from exc
    check_finite(state, w_path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ConfigError(f"{w_path}: weights do not match {cfg_path}: {' '.join(str(exc).split())}") from exc
    if missing or unexpected:
        raise ConfigError(f"{w_path}: weights do not match config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()


def checkpoint_info(directory: str | Path | None = None) -> dict[str, Any]:
    directory = resolve_checkpoint(directory)
    info = _read_config(directory / CONFIG).get("info", {})
    return info if isinstance(info, dict) else {}


TRAINED_UNDER = "trained_under_constraints"


def prior_constraints(directory: str | Path | None = None) -> ChemConstraints:
    """The chemical-space constraints a prior was fine-tuned under (``info.trained_under_constraints`` of its
    ``config.json``, written by ``optimize`` and ``save-prior``); free (inactive) when it has none.

    ``sample`` and ``optimize`` combine them with the user's own: the agent learnt its distribution only
    inside them. Raises :class:`ConfigError` naming the file when the entry is not a valid constraint mapping.
    """
    directory = resolve_checkpoint(directory)
    cfg_path = directory / CONFIG
    if not cfg_path.is_file():
        return ChemConstraints()  # not a checkpoint: load_prior says so, with the bundled names
    raw = checkpoint_info(directory).get(TRAINED_UNDER)
    if raw is None:
        return ChemConstraints()
    try:
        return ChemConstraints.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{cfg_path}: info.{TRAINED_UNDER}: {exc}") from exc
