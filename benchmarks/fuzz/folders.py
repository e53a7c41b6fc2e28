"""Corrupt run and prior folders: a finished tiny run and a tiny prior, copied and damaged one file at a time.

``make_base`` builds, once per fuzz workdir, a tiny prior (``tests/rl_toy.save_tiny_prior``), a task
and config file and a finished 12-evaluation ``matinvent optimize`` run. Each corruption damages a copy
and returns its label: ``refuse`` (``--resume`` / loading must exit 2 naming the file), ``accept``
(must go on: the damage is to something the run rewrites) or ``any``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fuzz.cif import _pick

# a ramp wide enough that every crystal earns a reward > 0, so the run's replay buffer has trajectories to damage
TASK_YAML = "name: dense\nproperties:\n  density: {target: range, center: 11.0, tolerance: 0.5, ramp: 30.0}\n"
RUN_BUDGET = 12


def run_argv(base: Path, out: Path, budget: int, resume: bool = True) -> list[str]:
    return [
        "optimize",
        "--task",
        str(base / "task.yaml"),
        "--config",
        str(base / "cfg.yaml"),
        "--method",
        "matinvent",
        "--budget",
        str(budget),
        "--seed",
        "0",
        "--out",
        str(out),
        *(["--resume"] if resume else []),
    ]


def make_base(base: Path) -> None:
    """The tiny prior, task.yaml, cfg.yaml and the finished run ``base/run``."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "tests"))
    from rl_toy import save_tiny_prior

    from matinvent.cli import main

    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    prior = save_tiny_prior(base / "prior")
    (base / "task.yaml").write_text(TASK_YAML)
    cfg = f"prior: {prior}\nbatch_size: 6\nsample_steps: 6\nvalidity: none\nlr: 1.0e-3\nkl_steps: 2\nthreads: 1\n"
    cfg += "recheck_n: 0\n"
    (base / "cfg.yaml").write_text(cfg)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(run_argv(base, base / "run", RUN_BUDGET, resume=False)) == 0
    assert any((base / "run" / "replay").glob("*.safetensors")), "the base run has no replay trajectories"


# --- file damages ------------------------------------------------------------------------------
def _empty(rng, p):
    p.write_bytes(b"")


def _garbage(rng, p):
    p.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())


def _truncate(rng, p):
    data = p.read_bytes()
    p.write_bytes(data[: int(rng.integers(0, max(len(data), 1)))])


def _flips(rng, p):
    data = bytearray(p.read_bytes())
    for _ in range(int(rng.integers(1, 9))):
        data[int(rng.integers(len(data)))] = int(rng.integers(256))
    p.write_bytes(bytes(data))


def _delete(rng, p):
    shutil.rmtree(p) if p.is_dir() else p.unlink()


def _directory(rng, p):
    _delete(rng, p)
    p.mkdir()


def _empty_dir(rng, p):
    for f in p.iterdir():
        f.unlink()


def _named(what: str, fn: Callable) -> Callable:
    """``fn``, described as ``what`` in the fuzz results."""
    fn.what = what
    return fn


def _json_edit(edit: Callable[[np.random.Generator, dict], object]):
    """A damage applying ``edit`` to a JSON file's object (a non-``None`` return replaces it)."""

    def damage(rng, p):
        data = json.loads(p.read_text())
        new = edit(rng, data)
        p.write_text(json.dumps(data if new is None else new))

    return _named(getattr(edit, "what", "edit"), damage)


def _set(path: str, value):
    """An edit setting ``a.b.c`` of a JSON object to ``value``."""

    def edit(rng, data):
        *parents, key = path.split(".")
        for k in parents:
            data = data[k]
        data[key] = value

    return _named(f"{path}={value!r}", edit)


def _drop(key: str):
    def edit(rng, data):
        del data[key]

    return _named(f"drop {key}", edit)


def _sql(statement: str):
    def damage(rng, p):
        with contextlib.closing(sqlite3.connect(str(p))) as conn, conn:
            conn.execute(statement)

    return _named(statement[:40], damage)


def _torch_edit(edit: Callable):
    """A damage applying ``edit`` to a checkpoint's state (a non-``None`` return replaces it)."""

    def damage(rng, p):
        import torch

        state = torch.load(p, weights_only=True)
        new = edit(state)
        torch.save(state if new is None else new, p)

    return _named(getattr(edit, "what", edit.__name__), damage)


def _nan_agent(state):
    import torch

    name = next(k for k in state["agent"] if k.endswith(".weight"))
    state["agent"][name] = torch.full_like(state["agent"][name], float("nan"))


def _object_payload(state):
    import argparse

    return argparse.Namespace(agent=1)  # not loadable with weights_only


# (file, damage, label)
RUN_DAMAGES: list[tuple[str, Callable, str]] = [
    *(
        (f, d, "refuse")
        for f in ("run.json", "checkpoint.pt")
        for d in (_empty, _garbage, _truncate, _delete, _directory)
    ),
    *((f, _flips, "any") for f in ("run.json", "checkpoint.pt", "memory.sqlite", "metrics.csv")),
    *(("run.json", _json_edit(_drop(k)), "refuse") for k in ("task", "method", "seed", "run_id", "config")),
    *(
        ("run.json", _json_edit(e), "refuse")
        for e in (
            _named("{}", lambda r, d: {}),
            _set("config", None),
            _set("config", [1]),
            _set("config", 5),
            _set("run_id", 5),
            _set("seed", "0"),
            _set("task", "other"),
            _set("windows", "density 9 ± 0.5"),
            _set("task_definition", None),
            _set("task_definition.targets", []),
            _set("task_definition.reduce", "mean"),
            _set("config.batch_size", 16),
            _set("config.lr", float("nan")),
        )
    ),
    *(("run.json", _json_edit(e), "any") for e in (_set("task_definition", [1]), _set("config.kl_weights", None))),
    ("run.json", _named("null", lambda r, p: p.write_text("null")), "refuse"),
    ("run.json", _named("[]", lambda r, p: p.write_text("[]")), "refuse"),
    ("run.json", _json_edit(_set("config.bogus", 1)), "any"),
    ("run.json", _json_edit(_set("budget", 5)), "any"),
    (
        "run.json",
        _named("latin-1 byte", lambda r, p: p.write_bytes(p.read_bytes().replace(b"dense", b"d\xe9nse", 1))),
        "refuse",
    ),
    *(
        ("checkpoint.pt", _torch_edit(e), "refuse")
        for e in (
            _nan_agent,
            _named("drop optimizer", lambda s: s.__delitem__("optimizer")),
            _named("[1, 2]", lambda s: [1, 2]),
            _object_payload,
            _named("agent=5", lambda s: s.update(agent=5)),
            _named("iteration='x'", lambda s: s.update(iteration="x")),
            _named("metrics='garbage'", lambda s: s.update(metrics="garbage")),
            _named("replay='{'", lambda s: s.update(replay="{")),
        )
    ),
    *(("memory.sqlite", d, "refuse") for d in (_empty, _garbage, _delete, _directory)),
    ("memory.sqlite", _truncate, "any"),
    *(
        ("memory.sqlite", _sql(s), "refuse")
        for s in (
            "DROP TABLE crystals",
            "DELETE FROM crystals WHERE iteration = 1",
            "ALTER TABLE crystals RENAME TO other",
            "INSERT INTO crystals (run_id, method, iteration, idx, valid, failed) SELECT run_id, method, 1, 99, 1, 0 "
            "FROM crystals LIMIT 1",
            "UPDATE crystals SET run_id = 'other'",
            "UPDATE crystals SET valid = 1",
        )
    ),
    *(
        ("memory.sqlite", _sql(s), "any")
        for s in ("UPDATE crystals SET reward = 0.5", "UPDATE crystals SET density = 'x'")
    ),
    *(("metrics.csv", d, "refuse") for d in (_directory,)),
    *(("metrics.csv", d, "any") for d in (_empty, _truncate, _delete, _garbage)),
    (
        "metrics.csv",
        _named("iteration x", lambda r, p: p.write_text(p.read_text().replace("\n1,", "\nx,", 1))),
        "refuse",
    ),
    ("metrics.csv", _named("header only", lambda r, p: p.write_text(p.read_text().split("\n")[0] + "\n")), "any"),
    (
        "metrics.csv",
        _named("invalid UTF-8 row", lambda r, p: p.write_bytes(p.read_bytes() + b"\xff\xfe,\x00\n")),
        "any",
    ),
    *(("replay", d, "refuse") for d in (_delete, _empty_dir)),
    *(("replay/*", d, "refuse") for d in (_garbage, _truncate, _empty)),
    ("replay/extra.safetensors", _named("junk", lambda r, p: p.write_bytes(b"junk")), "any"),
    (".lock", _named("stale pid", lambda r, p: p.write_text("999999\n")), "accept"),
    (".lock", _garbage, "accept"),
    ("summary.json", _garbage, "accept"),
    ("agent/model.safetensors", _garbage, "accept"),
]
RUN_SPECIAL = [("locked", "refuse"), ("no_resume", "refuse"), ("no_run_json_fresh", "refuse")]


def damage_run(rng: np.random.Generator, run: Path) -> tuple[str, str, dict]:
    """Damage the run copy ``run``; (mutation, label, options: budget, locked, resume)."""
    budget = 18 if rng.random() < 0.25 else RUN_BUDGET
    if rng.random() < 0.06:
        name, label = _pick(rng, RUN_SPECIAL)
        if name == "no_run_json_fresh":
            (run / "run.json").unlink()
        return name, label, {"budget": budget, "locked": name == "locked", "resume": name == "locked"}
    i = int(rng.integers(len(RUN_DAMAGES)))
    target, damage, label = RUN_DAMAGES[i]
    path = run / target
    if target == "replay/*":
        path = sorted((run / "replay").glob("*.safetensors"))[0]
    damage(rng, path)
    return f"{target}:{i}:{_what(damage)}", label, {"budget": budget, "locked": False, "resume": True}


def _what(damage: Callable) -> str:
    return getattr(damage, "what", damage.__name__.lstrip("_"))


def _tensor_edit(edit: Callable[[dict], object]):
    def damage(rng, p):
        from safetensors.torch import load_file, save_file

        state = load_file(str(p))
        edit(state)
        save_file(state, str(p))

    return _named(getattr(edit, "what", edit.__name__), damage)


def _weight(state, value):
    import torch

    name = next(k for k in state if k.endswith(".weight"))
    state[name] = torch.full_like(state[name], value)


def _shrink_weight(state):
    name = next(k for k in state if k.endswith(".weight"))
    state[name] = state[name][:1].clone()


def _header(rng, p):
    data = p.read_bytes()
    p.write_bytes(_pick(rng, [(2**63).to_bytes(8, "little"), (10**9).to_bytes(8, "little")]) + data[8:])


def _header_json(rng, p):
    data = p.read_bytes()
    n = int.from_bytes(data[:8], "little")
    p.write_bytes(data[:8] + b"{" + b" " * (n - 1) + data[8 + n :])


PRIOR_DAMAGES: list[tuple[str, Callable, str]] = [
    *(("model.safetensors", d, "refuse") for d in (_empty, _garbage, _truncate, _delete, _header, _header_json)),
    ("model.safetensors", _flips, "any"),
    *(
        ("model.safetensors", _tensor_edit(e), "refuse")
        for e in (
            _named("NaN weight", lambda s: _weight(s, float("nan"))),
            _named("Inf weight", lambda s: _weight(s, float("inf"))),
            _named("tensor missing", lambda s: s.__delitem__(next(iter(s)))),
            _named("extra tensor", lambda s: s.update(extra=s[next(iter(s))].clone())),
            _shrink_weight,
            _named("NaN natoms_prob", lambda s: s.update(natoms_prob=s["natoms_prob"] * float("nan"))),
        )
    ),
    *(
        ("model.safetensors", _tensor_edit(e), "any")
        for e in (
            _named("negative natoms_prob", lambda s: s.update(natoms_prob=-s["natoms_prob"])),
            _named("zero natoms_prob", lambda s: s.update(natoms_prob=s["natoms_prob"] * 0)),
            _named("float64", lambda s: s.update({k: v.double() for k, v in s.items() if v.is_floating_point()})),
        )
    ),
    *(("config.json", d, "refuse") for d in (_empty, _garbage, _delete, _directory)),
    ("config.json", _flips, "any"),
    ("config.json", _truncate, "refuse"),
    *(
        ("config.json", _named(t, lambda r, p, t=t: p.write_text(t)), "refuse")
        for t in ("null", "[1]", "{", '"x"', "{}")
    ),
    *(
        ("config.json", _json_edit(e), "refuse")
        for e in (
            _drop("denoiser"),
            _drop("diffusion"),
            _set("format", "other/9"),
            _set("denoiser", 3),
            _set("denoiser.hidden", -1),
            _set("denoiser.hidden", 0),
            _set("denoiser.hidden", "abc"),
            _set("denoiser.hidden", 10**6),
            _set("denoiser.hidden", 20000),
            _set("denoiser.layers", 10**6),
            _set("denoiser.bogus", 1),
            _set("diffusion.timesteps", 10**8),
            _set("diffusion.max_atoms", 10**9),
            _set("denoiser.n_freq", 10**7),
            _set("diffusion.sigma_begin", float("nan")),
            _set("denoiser.time_dim", 17),
            _set("diffusion.timesteps", 0),
            _set("diffusion.type_diffusion", "bogus"),
        )
    ),
    *(("config.json", _json_edit(e), "any") for e in (_set("natoms_prob", "x"), _set("info", [1]))),
]


def damage_prior(rng: np.random.Generator, prior: Path) -> tuple[str, str]:
    """Damage the prior copy ``prior``; (mutation, label)."""
    i = int(rng.integers(len(PRIOR_DAMAGES)))
    target, damage, label = PRIOR_DAMAGES[i]
    damage(rng, prior / target)
    return f"{target}:{i}:{_what(damage)}", label
