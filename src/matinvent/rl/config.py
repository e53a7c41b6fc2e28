"""The optimisation config: one typed dataclass, validated at load with errors naming the key."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from matinvent.config_io import Bounds, ConfigError, from_dict, read_yaml
from matinvent.crystal.constraints import ChemConstraints
from matinvent.crystal.validity import GATE_ALIASES, GATES
from matinvent.prior.diffusion_config import COMPONENTS
from matinvent.scoring.executor import EXECUTORS

METHODS = ("matinvent", "reinforce", "hill-climb", "prior", "weighted-denoising")
VALIDITY = (*GATES, *GATE_ALIASES)  # full = physical+composition, structure = physical (older names)
BASELINES = ("none", "batch", "normalize")
REDUCE = ("sum", "mean")
REPLAY_PG = ("include", "exclude")
REJECTED_PG = ("skip", "zero")
RELAX = ("auto", "mlip", "none", None)
STABILITY = ("auto", "hull", "none")


@dataclass
class ComponentWeights:
    """A weight per stochastic component of a transition (see ``crystal_diffusion.COMPONENTS``)."""

    F_corr: float = 1.0
    F: float = 1.0
    L: float = 1.0
    A: float = 1.0

    def as_list(self) -> list[float]:
        return [getattr(self, c) for c in COMPONENTS]


@dataclass
class RLConfig:
    """Knobs of ``matinvent optimize``. The defaults are MatInvent with our stabilisers (docs/rl-settings.md), not the
    paper's Eq. 17; ``preset: paper`` (:data:`PRESETS`) is Eq. 17 as written, with the official code's values."""

    preset: str | None = None  # paper: start from PRESETS["paper"]; keys given beside it override it

    prior: str = "mp20_masked"  # checkpoint folder or bundled prior name (mp20_masked: fast on a CPU)
    batch_size: int = 32  # crystals sampled per iteration
    sample_steps: int | None = 25  # reverse steps per sample, the MDP's T (benchmarks/rollout_steps.py); None = prior's
    # which crystals reach the oracles: physical+composition (covalent radii + density + SMACT) | physical |
    # cdvae+composition | cdvae (the 0.5 Å check of earlier releases) | none; old names full, structure
    validity: str = "physical+composition"
    lr: float = 5e-4  # Adam; tuned on the density task with mp20_small on a CPU (few iterations per run)
    # matinvent: optimiser steps per iteration, each on K freshly drawn steps (4 with ppo_clip: tune_ppo_ep4.md)
    epochs: int = 4
    grad_clip: float = 1.0
    alpha: float = 1.0  # policy-gradient weight
    # PG weight: none (r, the paper) | batch (r − mean) | normalize ((r − mean)/std, clipped at ±adv_clip; default,
    # chosen on 4 tasks × 3 seeds: docs/rl-settings.md)
    baseline: str = "normalize"
    adv_clip: float = 5.0
    pg_components: list[str] = field(default_factory=lambda: list(COMPONENTS))  # log p terms in the PG
    beta: float = 0.1  # reward-weighted KL weight (the paper gives none; tuned: benchmarks/results/tune_beta01.md)
    lam: float = 1.1  # λ, slightly above the maximum reward
    kl_steps: int = 10  # K of T steps drawn per trajectory and update (0 = all T)
    recompute_chunk: int = 1  # drawn steps per network call (0 = all); 1 was fastest on CPU, more uses more memory
    # --- stabilisers (ours, on by default; preset paper turns every one off) ---
    logp_reduce: str = "mean"  # mean (default): each component's log p and KL averaged over its size | sum (paper)
    sigma_floor: float = 0.0  # floor on the Gaussian σ in log-probs and KLs (0 = none)
    skip_last: int = 0  # the last k reverse steps (near-deterministic) never enter the update
    ppo_clip: float = 0.2  # ε of PPO's clipped ratio vs. the log-probs stored at sampling (0 = plain PG)
    # the ratio PPO clips: summed (default: exp of the summed log-prob difference, the true likelihood ratio of the
    # step) | mean (exp of the per-dimension mean difference, as before 2026-12-07; kept to measure the change)
    ppo_ratio: str = "summed"
    # replayed trajectories in the PG: include (like the batch's; with ppo_clip, a clipped importance ratio against
    # the log-probs stored when they were sampled) | exclude (KL term only)
    replay_pg: str = "include"
    # crystals the validity gate rejects (no oracle call): skip (left out of the update) | zero (reward 0 in the
    # top-k and the advantages: a negative PG signal that costs no evaluation)
    rejected_pg: str = "skip"
    kl_weights: ComponentWeights = field(default_factory=ComponentWeights)  # KL weight per component
    natoms_action: bool = False  # N drawn from a learnable categorical (the MDP's first action)
    natoms_lr: float = 0.05  # Adam learning rate of the atom-count logits
    topk_ratio: float = 0.5  # fraction of the batch kept for the update (matinvent, weighted-denoising)
    replay_size: int = 100
    replay_per_iter: int = 10
    replay_min_reward: float = 0.1  # a crystal enters the replay buffer with a filtered reward above this
    # what counts as the same crystal for the diversity filter, distinct hits (Burden) and the Diversity ratio:
    # formula (the paper's: reduced formula) | structure (formula and pymatgen StructureMatcher: polymorphs differ)
    unique_by: str = "formula"
    df_tol: int = 0  # diversity filter (paper: no values); (3, 6) until 2026-12-02 15:30
    df_buff: int = 2
    element_balance: float = 0.0  # γ of the element-balance filter (0 = off; configs/align.yaml: rl/element_balance.py)
    element_balance_window: int = 1000  # evaluated crystals whose element frequencies the filter compares
    element_balance_reference: str = "mp20"  # mp20 (MP-20's frequencies) | start (the run's first window: drift only)
    hc_top_ratio: float = 0.4  # hill climbing: fraction of the batch fine-tuned on
    hc_epochs: int = 4
    wd_epochs: int = 8  # weighted-denoising: optimiser steps per iteration (each a fraction of a PG step's cost)
    reinforce_baseline: str = "none"  # reinforce's PG weight (none = plain REINFORCE; batch | normalize)
    reinforce_epochs: int = 2  # reinforce: optimiser steps per iteration (no clipped ratio: the paper's loss)
    wd_prior_weight: float = 1.0  # weighted-denoising: weight of the MSE pull toward the prior's predictions
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0: half the usable CPUs (config_io.default_threads: 1 on 2 cores)
    oracle_timeout_s: float | None = None  # limit (s) per structure and oracle call, in a worker (None = in-process)
    # where oracle calls run: local (in-process; worker processes with oracle_timeout_s) | dask (one task per
    # structure on the Dask scheduler at `scheduler`, tcp://host:port, else on a LocalCluster of `workers` processes)
    executor: str = "local"
    scheduler: str | None = None
    workers: int | None = None  # worker processes (local: null = in-process or 1 with oracle_timeout_s; dask: 2)
    # relax -> gate -> score. mlip: relax each crystal once with SevenNet-0, gate the relaxed structure and score
    # every property on it (the MLIP's formation_energy / moduli / e_above_hull in place of CGCNN's); none (or
    # null): score the generated structures (the paper's setting); auto (default): mlip when the MLIP extra
    # (sevenn + torch-sim) is installed, else none. run.json records which it was.
    relax: str | None = "auto"
    relax_max_steps: int = 200  # FIRE step limit of that relaxation (FrechetCellFilter)
    relax_fmax: float = 0.05  # its force convergence threshold, eV/Å
    relax_engine: str = "batched"  # batched: an iteration's crystals at once (torch-sim); ase: one at a time
    # stability in the hit definition. hull: a hit also needs E_hull <= stability_max (eV/atom, the loop's own
    # relaxation vs the shipped hull) and the reward is multiplied by a ramp from 1 there to 0 at
    # stability_max + stability_ramp; none: the task's windows only; auto (default): hull with relax: mlip
    stability: str = "auto"
    stability_max: float = 0.1
    stability_ramp: float = 0.2
    recheck_n: int = 20  # at the end, relax up to this many distinct hits (random subset) and re-score them (0 = off)
    n_hits: int = 100  # Burden's n
    diversity_budget: int = 3000  # Diversity ratio's b
    # chemical-space constraints enforced inside the sampler (matinvent.crystal.constraints: elements, exclude, chemsys,
    # max_elements, natoms, preset); stored canonically, so --resume recomputes under the same masks
    constraints: dict[str, Any] = field(default_factory=lambda: ChemConstraints().to_dict())


# Bounds of every numeric key (sanity limits, not tuning advice); validate() also checks the choices and
# cross-key rules: df_tol < df_buff, skip_last < the prior's sampler steps (at the start of a run).
BOUNDS: dict[str, Bounds] = {
    "batch_size": Bounds(1, 4096),
    "sample_steps": Bounds(1, 10_000),  # None: the prior's default
    "lr": Bounds(0, 1, low_open=True),
    "epochs": Bounds(1, 1000),
    "grad_clip": Bounds(0, 1e6, low_open=True),
    "alpha": Bounds(0, 1000),
    "adv_clip": Bounds(0, 1000, low_open=True),
    "beta": Bounds(0, 1000),
    "lam": Bounds(1, 1000, low_open=True),  # λ must exceed the maximum reward, 1
    "kl_steps": Bounds(0, 10_000),
    "recompute_chunk": Bounds(0, 10_000),
    "sigma_floor": Bounds(0, 1),
    "skip_last": Bounds(0, 10_000),
    "ppo_clip": Bounds(0, 1, high_open=True),
    "natoms_lr": Bounds(0, 1, low_open=True),
    "topk_ratio": Bounds(0, 1, low_open=True),
    "replay_size": Bounds(0, 100_000),
    "replay_per_iter": Bounds(0, 4096),
    "replay_min_reward": Bounds(0, 1, high_open=True),
    "df_tol": Bounds(0, 999_999),  # and < df_buff
    "df_buff": Bounds(1, 1_000_000),
    "element_balance": Bounds(0, 100),
    "element_balance_window": Bounds(1, 10_000_000),
    "hc_top_ratio": Bounds(0, 1, low_open=True),
    "hc_epochs": Bounds(1, 1000),
    "wd_epochs": Bounds(1, 1000),
    "reinforce_epochs": Bounds(1, 1000),
    "wd_prior_weight": Bounds(0, 1000),
    "threads": Bounds(0, 1024),
    "workers": Bounds(1, 4096),
    "recheck_n": Bounds(0, 100_000),
    "relax_max_steps": Bounds(1, 100_000),
    "relax_fmax": Bounds(0, 10, low_open=True),
    "stability_max": Bounds(-1, 10),
    "stability_ramp": Bounds(0, 10, low_open=True),
    "n_hits": Bounds(1, 1_000_000),
    "diversity_budget": Bounds(1, 1_000_000_000),
}
KL_WEIGHT_MAX = 1000.0


def _one_of(cfg: RLConfig, key: str, allowed: tuple[str, ...]) -> None:
    if getattr(cfg, key) not in allowed:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")


def validate(cfg: RLConfig) -> RLConfig:
    """Check every key against ``BOUNDS`` and its choices; errors name the key. Returns ``cfg``."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key '{f.name}' must be a finite number, got {v}")
    for key, bounds in BOUNDS.items():
        bounds.check(key, getattr(cfg, key))
    if not cfg.df_tol < cfg.df_buff:
        raise ConfigError(f"config keys 'df_tol' < 'df_buff' must hold (got {cfg.df_tol}, {cfg.df_buff})")
    if not cfg.pg_components or any(c not in COMPONENTS for c in cfg.pg_components):
        raise ConfigError(
            f"config key 'pg_components' must be a non-empty list of {', '.join(COMPONENTS)}, got {cfg.pg_components!r}"
        )
    timeout = cfg.oracle_timeout_s
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"config key 'oracle_timeout_s' must be a positive number or null, got {timeout}")
    for c in COMPONENTS:
        w = getattr(cfg.kl_weights, c)
        if not (math.isfinite(w) and w >= 0):
            raise ConfigError(f"config key 'kl_weights.{c}' must be a finite number >= 0, got {w}")
        if w > KL_WEIGHT_MAX:
            raise ConfigError(f"config key 'kl_weights.{c}' must be <= {KL_WEIGHT_MAX:g}, got {w}")
    for key in ("baseline", "reinforce_baseline"):
        _one_of(cfg, key, BASELINES)
    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise ConfigError(f"config key 'preset' must be one of {', '.join(PRESETS)} or null, got {cfg.preset!r}")
    _one_of(cfg, "logp_reduce", REDUCE)
    _one_of(cfg, "ppo_ratio", ("summed", "mean"))
    _one_of(cfg, "unique_by", ("formula", "structure"))
    _one_of(cfg, "element_balance_reference", ("mp20", "start"))
    _one_of(cfg, "replay_pg", REPLAY_PG)
    _one_of(cfg, "rejected_pg", REJECTED_PG)
    _one_of(cfg, "validity", VALIDITY)
    _one_of(cfg, "executor", EXECUTORS)
    if cfg.scheduler is not None and (cfg.executor != "dask" or "://" not in str(cfg.scheduler)):
        raise ConfigError(
            f"config key 'scheduler' must be null or a Dask address like tcp://host:8786 (with executor: dask), "
            f"got {cfg.scheduler!r} (executor: {cfg.executor})"
        )
    if cfg.workers is not None and cfg.scheduler is not None:
        raise ConfigError("config key 'workers' sizes a local Dask cluster; the one at 'scheduler' has its own")
    if cfg.relax not in RELAX:
        raise ConfigError(f"config key 'relax' must be auto, mlip, none or null, got {cfg.relax!r}")
    if cfg.relax_engine not in ("ase", "batched"):
        raise ConfigError(f"config key 'relax_engine' must be ase or batched, got {cfg.relax_engine!r}")
    _one_of(cfg, "stability", STABILITY)
    if cfg.stability == "hull" and cfg.relax in (None, "none"):
        raise ConfigError("config key 'stability' is hull but relax is none: E_hull comes from the loop's relaxation")
    try:
        cfg.constraints = ChemConstraints.from_dict(cfg.constraints).to_dict()
    except ConfigError as exc:
        raise ConfigError(f"config key 'constraints': {exc}") from exc
    return cfg


def resolve(cfg: RLConfig, task: Any = None) -> RLConfig:
    """``cfg`` with ``relax`` and ``stability`` settled: auto as the installed packages and the ``task`` (one that
    scores crystals as generated: none) allow, none as null."""
    from matinvent.scoring.scorer import settle_pipeline

    relax, stability = settle_pipeline(cfg.relax, cfg.stability, task)
    return validate(replace(cfg, relax=relax, stability=stability))


# Eq. 17 exactly (every trajectory of the batch, summed log-probs and KLs over all T steps, r as the PG weight,
# no clipped ratio, no stabiliser), with the values the paper leaves open taken from the official code
# (schwallergroup/matinvent e6e3b3f, DiffCSP backbone): β = 0.025, λ = 1.1, lr 1e-4, replay 200 / 10 per step /
# reward cutoff 0.1, diversity filter on the reduced composition with Tol 2 / Buff 4, and its pre-oracle filter
# (0.5 Å contacts + SMACT). The official code keeps the top half of each batch (top-k 0.5); Eq. 17 has no
# top-k (the paper uses it for hill climbing only), so the preset trains on the whole batch.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "topk_ratio": 1.0,
        "logp_reduce": "sum",
        "baseline": "none",
        "ppo_clip": 0.0,
        "sigma_floor": 0.0,
        "skip_last": 0,
        "kl_steps": 0,
        "epochs": 1,
        "replay_pg": "include",
        "rejected_pg": "skip",
        "kl_weights": {"F_corr": 1.0, "F": 1.0, "L": 1.0, "A": 1.0},
        "natoms_action": False,
        "alpha": 1.0,
        "beta": 0.025,
        "lam": 1.1,
        "lr": 1e-4,
        "replay_size": 200,
        "replay_per_iter": 10,
        "replay_min_reward": 0.1,
        "df_tol": 2,
        "df_buff": 4,
        "validity": "cdvae+composition",
    }
}


def with_preset(data: Any) -> Any:
    """A config mapping with its ``preset``'s values under the keys it gives itself (unknown preset: ConfigError)."""
    if not isinstance(data, dict) or data.get("preset") is None:
        return data
    name = data["preset"]
    if name not in PRESETS:
        raise ConfigError(f"config key 'preset' must be one of {', '.join(PRESETS)} or null, got {name!r}")
    return {**PRESETS[name], **data}


def paper_loss(cfg: RLConfig) -> RLConfig:
    """``cfg`` with every stabiliser of Eq. 17 off (what the baselines other than ``matinvent`` train with)."""
    return replace(
        cfg,
        logp_reduce="sum",
        sigma_floor=0.0,
        skip_last=0,
        ppo_clip=0.0,
        replay_pg="include",
        rejected_pg="skip",
        kl_weights=ComponentWeights(),
        natoms_action=False,
    )


def rl_config_from_dict(data: Any) -> RLConfig:
    return validate(from_dict(RLConfig, with_preset(data)))


def load_rl_config(path: str | Path | None, preset: str | None = None) -> RLConfig:
    """Read and validate an optimisation YAML (``None``: defaults); ``preset`` replaces the file's ``preset`` key."""
    data = read_yaml(path)
    if preset is not None:
        data = {**(data or {}), "preset": preset}
    try:
        return rl_config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
