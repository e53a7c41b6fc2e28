"""Property-based tests of hostile input (issue #12): random values never escape as anything but a clean error.

A small, fast, deterministic profile (``FAST``) for CI; ``benchmarks/fuzz_inputs.py`` is the
large, seeded fuzz run. Each property states what a correct outcome is, not merely "no crash".
"""

from __future__ import annotations

import math
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from matinvent.config_io import ConfigError, as_number
from matinvent.crystal.record import Crystal, CrystalError
from matinvent.io.structure_files import read_structure_items
from matinvent.oracles.command import parse_number
from matinvent.rl import load_rl_config
from matinvent.rl.config import BOUNDS, VALIDITY
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import load_task

FAST = settings(
    max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
NACL = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
KBR = Structure(Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])
NACL_CIF, KBR_CIF = str(CifWriter(NACL)), str(CifWriter(KBR))
CELL = ("a", "b", "c", "alpha", "beta", "gamma")

any_float = st.floats(allow_nan=True, allow_infinity=True)
length = st.one_of(st.floats(min_value=0.5, max_value=600.0), any_float)
angle = st.one_of(st.floats(min_value=1.0, max_value=179.0), any_float)
plausible = st.tuples(
    *[st.floats(min_value=2.0, max_value=30.0)] * 3, *[st.floats(min_value=60.0, max_value=120.0)] * 3
)
cells = st.one_of(plausible, plausible, st.tuples(*[length] * 3, *[angle] * 3))  # (a, b, c, α, β, γ)
occupancy = st.one_of(
    st.sampled_from(["1", "?", "1.0(0)", "0.9995"]),
    st.floats(min_value=0.99, max_value=1.01).map(repr),
    any_float.map(repr),
)  # "." is left out: pymatgen reads it as 0 and drops the site (reported with the fuzz results of issue #12)


def nacl_cif(lengths: tuple[float, ...], angles: tuple[float, ...], occ: str) -> str:
    text = NACL_CIF
    for name, value in zip(CELL, (*lengths, *angles), strict=True):
        kind = "length" if len(name) == 1 else "angle"
        text = re.sub(rf"^_cell_{kind}_{name}\s+\S+$", f"_cell_{kind}_{name}   {value!r}", text, flags=re.M)
    return text.replace("0.50000000  0.50000000  0.50000000  1\n", f"0.50000000  0.50000000  0.50000000  {occ}\n")


@FAST
@given(cells, occupancy)
def test_random_cells_and_occupancies_read_as_the_written_crystal_or_a_clean_crystal_error(cell, occ):
    lengths, angles = cell[:3], cell[3:]
    try:
        crystal = Crystal.from_cif(nacl_cif(lengths, angles, occ))
    except CrystalError as exc:  # any other exception fails the test
        assert str(exc).strip()
        return
    assert all(0 < x <= 500 for x in lengths) and all(0 < x < 180 for x in angles)
    assert occ in ("?", "1.0(0)") or abs(float(occ) - 1) <= 1e-3
    lattice = Lattice(crystal.L)
    assert np.allclose(lattice.abc, lengths, rtol=1e-6) and np.allclose(lattice.angles, angles, atol=1e-4)
    assert crystal.Z.tolist() == [11, 17] and crystal.volume > 0  # no site dropped, merged or renamed


# --- RL config keys --------------------------------------------------------------------------------
KEYS = ("lr", "batch_size", "lam", "alpha", "grad_clip", "kl_steps", "topk_ratio", "validity", "natoms_action")
INT_KEYS = {"batch_size", "kl_steps"}
yaml_value = st.one_of(
    any_float,
    st.integers(min_value=-(10**40), max_value=10**40),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
    st.sampled_from(sorted(VALIDITY)),
)
raw_number = st.from_regex(r"[-+]?[0-9_.eExXoO]{1,10}", fullmatch=True)  # YAML 1.1 number forms among others


def _within(key: str, value) -> bool:
    b = BOUNDS[key]
    return (b.low < value if b.low_open else b.low <= value) and (value < b.high if b.high_open else value <= b.high)


@FAST
@given(st.sampled_from(KEYS), st.one_of(yaml_value.map(lambda v: ("dumped", v)), raw_number.map(lambda v: ("raw", v))))
def test_random_yaml_scalars_give_a_valid_config_or_a_config_error_naming_the_key(tmp_path_factory, key, value):
    how, v = value
    text = yaml.safe_dump({key: v}) if how == "dumped" else f"{key}: {v}\n"
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "cfg.yaml"
    path.write_text(text)
    try:
        cfg = load_rl_config(path)
    except ConfigError as exc:
        assert f"'{key}'" in str(exc) or (how == "raw" and "not valid YAML" in str(exc)), str(exc)
        assert str(path) in str(exc)
        if how == "dumped" and key in BOUNDS and not isinstance(v, bool) and isinstance(v, int | float):
            number_ok = math.isfinite(v) and (isinstance(v, int) or key not in INT_KEYS or float(v).is_integer())
            assert not (number_ok and _within(key, v)), f"{key}: {v!r} is valid but was refused: {exc}"
        return
    got = getattr(cfg, key)
    if key == "validity":
        assert got in VALIDITY
    elif key == "natoms_action":
        assert isinstance(got, bool)
    else:
        assert not isinstance(got, bool) and isinstance(got, int if key in INT_KEYS else float)
        assert math.isfinite(got) and _within(key, got)
    if how == "dumped":  # the value written, quoted numbers included ("written bare or quoted")
        assert got == (as_number(v) if isinstance(v, str) and key != "validity" else v)


# --- random bytes among good CIFs ------------------------------------------------------------------
def _flipped(edits: list[tuple[int, int]]) -> bytes:
    data = bytearray(NACL_CIF.encode())
    for i, b in edits:
        data[i % len(data)] = b
    return bytes(data)


hostile_bytes = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8).map(_flipped),
    st.binary(max_size=40).map(lambda b: b + NACL_CIF.encode()),
)
DENSITY = Scorer(load_task("density"))


@FAST
@given(hostile_bytes)
def test_random_bytes_among_good_cifs_give_one_row_per_file_and_the_good_ones_scored(tmp_path_factory, data):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    (folder / "a_good.cif").write_text(NACL_CIF)
    (folder / "m_hostile.cif").write_bytes(data)
    (folder / "z_good.cif").write_text(KBR_CIF)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids, crystals, reasons = read_structure_items(folder)
        scores = DENSITY(crystals)
    assert ids == ["a_good", "m_hostile", "z_good"] and len(scores.reward) == 3
    assert crystals[0].allclose(Crystal.from_structure(NACL)) and crystals[2].allclose(Crystal.from_structure(KBR))
    assert (crystals[1] is None) == bool(reasons[1])
    if crystals[1] is None:
        assert reasons[1].startswith("m_hostile.cif") and scores.reward[1] == 0 and not scores.valid[1]
    assert scores.valid[[0, 2]].all() and scores.reason[0] == scores.reason[2] == ""
    assert scores.values["density"][[0, 2]] == pytest.approx([NACL.density, KBR.density])
    assert np.isfinite(scores.values["density"][1]) == bool(scores.valid[1])  # only valid structures reach the oracle


# --- command-oracle output -------------------------------------------------------------------------
oracle_text = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\s*[-+]?[0-9_.eE]{0,12}\s*", fullmatch=True),
    any_float.map(repr),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.sampled_from(["１２", "١٢٣", "1_000", "0x10", "inf", "nan", "-.5", "5.", "1e400", "+1E-3", "٣.٥"]),
)


@FAST
@given(oracle_text)
def test_command_oracle_numbers_follow_the_one_number_syntax_of_configs(text):
    value = parse_number(text)
    if as_number(text.strip()) is None or not math.isfinite(float(text.strip())):
        assert value is None
    else:
        assert value == float(text.strip()) and math.isfinite(value)
