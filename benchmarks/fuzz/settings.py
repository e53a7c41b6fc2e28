"""Hostile settings files: RL and pretraining config YAMLs and task files.

Each builder returns ``(mutation, file bytes, label)``: ``reject`` when a correct loader must refuse
the file with a clean error (a non-finite, out-of-bounds or mistyped value, an unknown key, a file
that is no UTF-8 YAML mapping), ``accept`` when it must load, ``any`` when either is right.
"""

from __future__ import annotations

import numpy as np

from fuzz.cif import _pick

REJECT_NUMBERS = [
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "1e30",
    "1" + "0" * 40,
    "-1e30",
    "'abc'",
    "abc",
    "[1, 2]",
    "{a: 1}",
    "true",
    "''",
    "1_000",
    "0x10",
    "0o17",
    "١٢٣",
    "１２",
    "1:30",
    "1e400",
]
ANY_NUMBERS = ["-1", "0", "-1e-9", "1e-320", "+5", "1e3", "017", ".5", "5.", "1.5e+3", "null", "2", "0.5", "1e-3"]
RL_CHOICES = {
    "validity": "physical",
    "baseline": "none",
    "logp_reduce": "sum",
    "replay_pg": "include",
    "reinforce_baseline": "none",
}
FILE_LEVEL = [  # (text or bytes, label)
    ("", "accept"),
    ("null\n", "accept"),
    ("[1, 2]\n", "reject"),
    ("5\n", "reject"),
    ("'text'\n", "reject"),
    (b"# r\xe9glages\nbatch_size: 8\n", "reject"),
    ("a: 1\n---\nb: 2\n", "reject"),
    ("\tbatch_size: 8\n", "any"),
    ("!!python/object/apply:os.system ['echo hi']\n", "reject"),
    ("key: [unclosed\n", "reject"),
    ("pg_components: " + "[" * 3000 + "]" * 3000 + "\n", "reject"),
    ("\ufeffbatch_size: 8\n", "any"),
]
ALIAS_BOMB = "a: &a [F, F, F, F, F, F, F, F, F]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
)


def _garbage(rng: np.random.Generator) -> bytes:
    return rng.integers(0, 256, size=int(rng.integers(1, 2048)), dtype=np.uint8).tobytes()


def _numeric(rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < 0.6:
        return _pick(rng, REJECT_NUMBERS), "reject"
    return _pick(rng, ANY_NUMBERS), "any"


def rl_config_case(rng: np.random.Generator) -> tuple[str, bytes, str]:
    """(mutation, YAML bytes, label) of an optimisation config with 1–3 hostile keys among valid ones."""
    from matinvent.rl.config import BOUNDS

    r = rng.random()
    if r < 0.08:
        text, label = _pick(rng, FILE_LEVEL)
        return "file_level", text if isinstance(text, bytes) else text.encode(), label
    if r < 0.1:
        return "garbage", _garbage(rng), "any"
    if r < 0.11:
        return "alias_bomb", ALIAS_BOMB.encode() + b"pg_components: *h\n", "reject"
    lines = {"batch_size": "8", "lr": "1.0e-3", "lam": "1.5", "validity": "physical"}
    labels, names = {}, []  # the label of a key's last value counts
    for _ in range(int(rng.integers(1, 4))):
        what = _pick(rng, ["number"] * 6 + ["choice", "bool", "list", "kl", "unknown"])
        if what == "number":
            key = _pick(rng, list(BOUNDS))
            value, label = _numeric(rng)
        elif what == "choice":
            key = _pick(rng, list(RL_CHOICES))
            value, label = _pick(
                rng,
                [
                    ("bogus", "reject"),
                    ("5", "reject"),
                    ("[physical]", "reject"),
                    ("PHYSICAL", "reject"),
                    (RL_CHOICES[key], "accept"),
                ],
            )
        elif what == "bool":
            key = "natoms_action"
            value, label = _pick(rng, [("yes", "any"), ("1", "reject"), ("'true'", "reject"), ("false", "accept")])
        elif what == "list":
            key = "pg_components"
            value, label = _pick(
                rng,
                [
                    ("[]", "reject"),
                    ("[F, F]", "any"),
                    ("[Z]", "reject"),
                    ("F", "reject"),
                    ("[[F]]", "reject"),
                    ("[F_corr, L]", "accept"),
                ],
            )
        elif what == "kl":
            key = "kl_weights"
            value, label = _pick(
                rng,
                [
                    ("{F: .nan}", "reject"),
                    ("{F: -1}", "reject"),
                    ("{Z: 1}", "reject"),
                    ("5", "reject"),
                    ("{F: 1e4}", "reject"),
                    ("{F: 0}", "accept"),
                ],
            )
        else:
            key, value, label = _pick(rng, ["batchsize", "bogus_key", "Batch_Size", "lr "]), "8", "reject"
        lines[key] = value
        labels[key] = label
        names.append(f"{what}:{key}={value[:20]}")
    label = "reject" if "reject" in labels.values() else "any"
    text = "".join(f"{k}: {v}\n" for k, v in lines.items())
    if rng.random() < 0.05:
        text = "prior: '" + "x" * 100_000 + "'\n" + text
    return "+".join(names), text.encode(), label


PRETRAIN_CHOICES = {
    "diffusion.type_prediction": "x0",
    "diffusion.type_diffusion": "masked",
    "diffusion.absorbing_schedule": "cosine",
    "train.amp": "none",
}
CROSS = [
    ("train:\n  lr: 1.0e-4\n  lr_min: 1.0e-3\n", "reject"),
    ("diffusion:\n  sigma_begin: 2\n  sigma_end: 1\n", "reject"),
    ("model:\n  time_dim: 33\n", "reject"),
    ("model: 5\n", "reject"),
    ("model: [1]\n", "reject"),
    ("bogus_section: {}\n", "reject"),
    ("train: null\n", "accept"),
    ("train:\n  bogus: 1\n", "reject"),
]


def pretrain_config_case(rng: np.random.Generator) -> tuple[str, bytes, str]:
    """(mutation, YAML bytes, label) of a pretraining config with a hostile value, section or file."""
    from matinvent.prior.pretrain_config import PRETRAIN_BOUNDS

    r = rng.random()
    if r < 0.1:
        text, label = _pick(rng, FILE_LEVEL)
        return "file_level", text if isinstance(text, bytes) else text.encode(), label
    if r < 0.12:
        return "garbage", _garbage(rng), "any"
    if r < 0.25:
        text, label = _pick(rng, CROSS)
        return "cross_key", text.encode(), label
    sections: dict[str, dict[str, str]] = {"train": {"max_steps": "10"}}
    labels, names = {}, []
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.8:
            key = _pick(rng, list(PRETRAIN_BOUNDS))
            value, label = _numeric(rng)
        else:
            key = _pick(rng, list(PRETRAIN_CHOICES))
            value, label = _pick(rng, [("bogus", "reject"), ("5", "reject"), (PRETRAIN_CHOICES[key], "accept")])
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
        labels[key] = label
        names.append(f"{key}={value[:20]}")
    text = "".join(f"{s}:\n" + "".join(f"  {k}: {v}\n" for k, v in kv.items()) for s, kv in sections.items())
    return "+".join(names), text.encode(), "reject" if "reject" in labels.values() else "any"


TASK_BASES = [
    {"density": "{target: range, center: 11.0, tolerance: 0.5, ramp: 3.0}"},
    {"hhi": "{target: below, threshold: 1250.0, ramp: 5000.0}"},
    {"density": "{target: above, threshold: 3.0, weight: 2.0}", "hhi": "{target: below, threshold: 2000, weight: 1}"},
    {"energy": "{target: below, threshold: 2.0}"},
]
ORACLE = "  energy: {command: [python3, -c, 'print(1.5)', '{input}'], timeout: 5}\n"
NOT_NUMBERS = ("1_000", "١٢٣", "１２", "0x10", "inf")  # printed by a command oracle: not numbers (NaN)
FIELDS = ("center", "tolerance", "threshold", "ramp", "weight")


def _task_text(name: str, reduce: str, props: dict[str, str], oracles: str | None) -> str:
    text = f"name: {name}\ndescription: fuzz\nreduce: {reduce}\nproperties:\n"
    text += "".join(f"  {p}: {spec}\n" for p, spec in props.items())
    return text + (f"oracles:\n{oracles}" if oracles else "")


def task_case(rng: np.random.Generator) -> tuple[str, bytes, str]:
    """(mutation, YAML bytes, label) of a task file with one hostile value, key, name or command."""
    from matinvent.scoring.tasks import RESERVED

    r = rng.random()
    if r < 0.06:
        text, label = _pick(
            rng,
            [
                ("", "reject"),
                ("[1, 2]\n", "reject"),
                ("a: 1\n---\nb: 2\n", "reject"),
                ("properties: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n", "reject"),
                (b"name: caf\xe9\nproperties: {density: {target: below, threshold: 1}}\n", "reject"),
                ("\ufeff" + _task_text("t", "min", TASK_BASES[1], None), "any"),
            ],
        )
        return "file_level", text if isinstance(text, bytes) else text.encode(), label
    if r < 0.08:
        return "garbage", _garbage(rng), "any"
    base = dict(_pick(rng, TASK_BASES))
    name, reduce, oracles = "t", "mean" if len(base) > 1 else "min", ORACLE if "energy" in base else None
    what = _pick(
        rng, ["number"] * 5 + ["prop_name", "unknown_key", "target", "reduce", "name", "properties", "command"] * 2
    )
    prop = _pick(rng, list(base))
    label = "reject"
    if what == "number":
        key = _pick(rng, FIELDS)
        value, label = _numeric(rng)
        if value in ("1e30", "1" + "0" * 40, "-1e30"):  # finite: task windows have no documented bounds
            label = "any"
        if (
            value in ("-1", "-1e-9")
            and key in ("tolerance", "ramp", "weight")
            or value == "0"
            and key in ("ramp", "weight")
        ):
            label = "reject"
        base[prop] = base[prop].rstrip("}") + f", {key}: {value}}}"  # a duplicate key: the last one counts
        what = f"number:{prop}.{key}={value[:20]}"
    elif what == "prop_name":
        new = _pick(rng, [*RESERVED, "band-gap", "1x", "'a b'", "ü", "''", "foo"])
        label = "any" if new == "foo" else "reject"
        base[new] = base.pop(prop)
        what = f"prop_name:{new}"
    elif what == "unknown_key":
        where = _pick(rng, ["top", "target", "oracle"])
        if where == "target" or (where == "oracle" and not oracles):
            base[prop] = base[prop].rstrip("}") + ", bogus: 1}"
        elif where == "oracle":
            oracles = ORACLE.rstrip("}\n") + ", bogus: 1}\n"
        else:
            name = "t\nbogus_key: 1"
        what = f"unknown_key:{where}"
    elif what == "target":
        base[prop] = _pick(
            rng,
            [
                "{target: bogus, threshold: 1}",
                "{target: RANGE, center: 1, tolerance: 1}",
                "{target: null}",
                "{target: range, center: 1}",
                "{target: below, threshold: 1, center: 2}",
                "5",
                "[below]",
            ],
        )
    elif what == "reduce":
        reduce = _pick(rng, ["max", "''", "5", "[min]", "MIN"])
    elif what == "name":
        name = _pick(rng, ["''", "5", "[a]", "null"])
    elif what == "properties":
        text = _pick(
            rng, ["name: t\nproperties: {}\n", "name: t\nproperties: []\n", "name: t\nproperties: 5\n", "name: t\n"]
        )
        return "properties", text.encode(), "reject"
    else:
        cmd, label = _pick(
            rng,
            [
                ("[python3, -c, 'print(1.5)', 3, 0.5, '{input}']", "accept"),
                ("[calc, true, '{input}']", "reject"),
                ("[calc, null, '{input}']", "reject"),
                ("[calc, {a: 1}, '{input}']", "reject"),
                ('"calc \'{input}"', "reject"),
                ("calc", "reject"),
                ("[]", "reject"),
                ("5", "reject"),
                ("[python3, -c, 'print(1.5)', '{input}'], timeout: 0", "reject"),
                ("[python3, -c, 'print(1.5)', '{input}'], timeout: .nan", "reject"),
                ("[python3, -c, 'print(1.5)', '{input}'], timeout: 1e9", "reject"),
                ("[python3, -c, 'print(1.5)', '{input}'], file_format: pdb", "reject"),
                ("[python3, -c, 'print(1.5)', '{input}'], unit: 3", "reject"),
                *((f"[python3, -c, \"print('{v}')\", '{{input}}']", "accept") for v in NOT_NUMBERS),
            ],
        )
        base = {"energy": "{target: below, threshold: 2.0}"}
        oracles = f"  energy: {{command: {cmd}}}\n"
        what = f"command:{cmd[:40]}"
    return what, _task_text(name, reduce, base, oracles).encode(), label
