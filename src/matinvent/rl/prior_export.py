"""A finished ``optimize`` run's agent as a prior folder of its own, with a ``TRAINING.md`` that says how.

The stability alignment (``optimize --task stability``) is the use this is made for: the aligned
agent becomes a prior every later run starts from (``--prior FOLDER`` or ``prior:`` in a config).
The folder is what :func:`matinvent.prior.checkpoint.save_prior` writes, with the sampler's default
number of steps set to the run's ``sample_steps`` (the MDP the agent was fine-tuned on) and the run's
chemical-space constraints, which ``sample`` and ``optimize`` then apply to it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from matinvent.config_io import ConfigError
from matinvent.prior.checkpoint import (
    TRAINED_UNDER,
    bundled_priors,
    default_checkpoint_path,
    load_prior,
    prior_constraints,
    save_prior,
)
from matinvent.rl.config import RLConfig
from matinvent.rl.run_folder import RUN_FILE, read_run_info

TRAINING = "TRAINING.md"


def prior_label(path: Any) -> str:
    """A bundled prior's name for its folder inside the package, else the path as given."""
    if path is None:
        return "?"
    p = Path(str(path))
    return p.name if p.parent == default_checkpoint_path(p.name).parent and p.name in bundled_priors() else str(p)


def _changed(config: dict[str, Any]) -> dict[str, Any]:
    """The run's config keys whose values differ from today's defaults."""
    defaults = asdict(RLConfig())
    return {k: v for k, v in config.items() if k in defaults and defaults[k] != v}


def training_text(run: Path, name: str, info: dict[str, Any], summary: dict[str, Any]) -> str:
    """The ``TRAINING.md`` of a prior exported from ``run``: command, settings, evaluations, wall time."""
    cfg = info.get("config") or {}
    changed = _changed(cfg)
    config_block = yaml.safe_dump(changed, sort_keys=True).strip() if changed else "# (all defaults)"
    wall = summary.get("wall_s")
    lines = [
        f"# {name} — how this prior was trained",
        "",
        f"RL fine-tuning of `{prior_label(info.get('prior'))}` by `matinvent optimize` on the task `{info.get('task')}`"
        f" ({info.get('windows')}), method `{info.get('method')}`, then exported with `matinvent save-prior`.",
        "",
        "```bash",
        f"matinvent optimize --task {info.get('task')} --method {info.get('method')} --budget {info.get('budget')} "
        f"--seed {info.get('seed')} --config config.yaml --out {run.name}",
        f"matinvent save-prior {run.name} --out {name}",
        "```",
        "",
        "`config.yaml` (the run's keys that differ from the defaults of the matinvent version that exported it):",
        "",
        "```yaml",
        config_block,
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| seed | {info.get('seed')} |",
        f"| evaluations | {summary.get('evaluations')} (budget {info.get('budget')}) |",
        f"| samples drawn | {summary.get('samples')} |",
        f"| iterations | {summary.get('iterations')} |",
        f"| hits | {summary.get('hits')} |",
        f"| wall time | {'n/a' if wall is None else f'{wall / 60:.1f} min'} |",
        f"| finished | {summary.get('finished')} |",
        f"| sampler steps | {cfg.get('sample_steps')} (the fine-tuned MDP; this folder's default) |",
        f"| run id | {info.get('run_id')} |",
        "",
        "The run folder keeps the per-iteration metrics (`metrics.csv`) and every scored crystal (`memory.sqlite`).",
        "",
    ]
    return "\n".join(lines)


def export_prior(run: str | Path, out: str | Path, name: str | None = None) -> Path:
    """Write ``run``'s fine-tuned agent to ``out`` as a prior folder with ``TRAINING.md``; returns ``out``.

    Raises:
        ConfigError: ``run`` has no ``run.json`` or no ``agent/`` (the run has not finished), or the agent
            does not load as a prior.
    """
    run, out = Path(run), Path(out)
    if not (run / RUN_FILE).is_file():
        raise ConfigError(f"{run}: no {RUN_FILE}; not a run folder of 'matinvent optimize'")
    if not (run / "agent").is_dir():
        raise ConfigError(f"{run}: no agent/ folder yet; the run writes it when it finishes (resume it to the end)")
    info = read_run_info(run / RUN_FILE)
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    model = load_prior(run / "agent")
    steps = (info.get("config") or {}).get("sample_steps")
    if steps:
        model.config.sample_steps = int(steps)
    name = name or out.name
    meta = {
        "fine_tuned_from": prior_label(info.get("prior")),
        "task": info.get("task"),
        "method": info.get("method"),
        "seed": info.get("seed"),
        "evaluations": summary.get("evaluations"),
        "run_id": info.get("run_id"),
    }
    trained_under = prior_constraints(run / "agent")
    if trained_under.active:  # sample and optimize keep the new prior inside them
        meta[TRAINED_UNDER] = trained_under.to_dict()
    save_prior(model, out, meta)
    (out / TRAINING).write_text(training_text(run, name, info, summary))
    return out
