"""Defects the fuzz suite (benchmarks/fuzz_inputs.py) found after #12 parts 1-5, each with its clean outcome."""

from __future__ import annotations

import json

import pytest
from rl_toy import save_tiny_prior

from matinvent.config_io import ConfigError
from matinvent.io.run_memory import Memory
from matinvent.prior.checkpoint import load_prior
from matinvent.rl.config import load_rl_config
from matinvent.rl.run_folder import resume_mismatch


def test_deeply_nested_yaml_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("pg_components: " + "[" * 3000 + "]" * 3000)
    with pytest.raises(ConfigError, match="deep.yaml"):
        load_rl_config(path)


def test_a_null_task_definition_in_run_json_is_a_difference_not_a_type_error():
    old = {"task": "t", "method": "m", "seed": 0, "task_definition": None, "config": None}
    new = {"task": "t", "method": "m", "seed": 0, "task_definition": {"reduce": "min"}, "config": {"lr": 1.0}}
    assert resume_mismatch(old, new) is None  # nothing comparable is stored: nothing differs


def test_a_memory_path_that_is_a_folder_names_it(tmp_path):
    (tmp_path / "memory.sqlite").mkdir()
    with pytest.raises(ValueError, match="memory.sqlite is a folder"):
        Memory(tmp_path / "memory.sqlite", ["density"])


@pytest.mark.parametrize("key, value", [("layers", 10**6), ("hidden", 20000)])
def test_a_prior_config_beyond_the_bounds_is_refused_before_building_the_model(tmp_path, key, value):
    prior = save_tiny_prior(tmp_path / "p")
    cfg = json.loads((prior / "config.json").read_text())
    cfg["denoiser"][key] = value
    (prior / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=f"config.json.*{key}"):
        load_prior(prior)


def test_a_negative_atom_count_histogram_is_refused_at_load(tmp_path):
    from safetensors.torch import load_file, save_file

    prior = save_tiny_prior(tmp_path / "p")
    state = load_file(str(prior / "model.safetensors"))
    state["natoms_prob"][2] = -0.5
    save_file(state, str(prior / "model.safetensors"))
    with pytest.raises(ConfigError, match="model.safetensors.*natoms_prob"):
        load_prior(prior)


def _nacl_cif() -> tuple[str, str]:
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    cif = str(CifWriter(Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])))
    row = next(line for line in cif.splitlines() if line.strip().startswith("Cl") and "0.5" in line)
    return cif, row


def test_a_dot_coordinate_is_refused_not_read_as_zero():
    from matinvent.crystal.record import Crystal, CrystalError

    cif, row = _nacl_cif()
    parts = row.split()
    parts[3] = "."
    with pytest.raises(CrystalError, match="'\\.'"):
        Crystal.from_cif(cif.replace(row, "  ".join(parts)))
    assert len(Crystal.from_cif(cif).Z) == 2  # the unmodified CIF reads both atoms


@pytest.mark.parametrize("occupancy", [".", "?", "1.0005", "0.9995", "1.0(0)"])
def test_a_full_occupancy_in_any_cif_spelling_keeps_the_site(occupancy):
    """'.'/'?' mean the CIF default (1); 1 ± 1e-3 is rounding. pymatgen alone drops '.' and refuses 1.0005."""
    from matinvent.crystal.record import Crystal

    cif, row = _nacl_cif()
    parts = row.split()
    parts[-1] = occupancy
    crystal = Crystal.from_cif(cif.replace(row, "  ".join(parts)))
    assert sorted(crystal.Z.tolist()) == [11, 17]


def test_a_bad_first_data_block_is_not_skipped_for_a_good_second_one():
    from matinvent.crystal.record import Crystal, CrystalError

    cif, _ = _nacl_cif()
    flat = cif.replace("_cell_length_c   5.64000000", "_cell_length_c   0.001").replace("data_NaCl", "data_flat")
    with pytest.raises(CrystalError, match="thickness"):  # pymatgen alone returns the second block
        Crystal.from_cif(flat + cif)


def test_a_null_task_definition_in_run_json_is_refused_naming_the_key(tmp_path):
    from matinvent.rl.run_folder import read_run_info

    path = tmp_path / "run.json"
    info = {"task": "t", "method": "m", "seed": 0, "run_id": "r", "config": {}, "task_definition": None}
    path.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="run.json: key 'task_definition' must be a mapping"):
        read_run_info(path)
    info["task_definition"] = {"reduce": "min"}
    path.write_text(json.dumps(info))
    assert read_run_info(path)["task_definition"] == {"reduce": "min"}


def test_every_data_block_of_a_multi_block_cif_is_checked():
    from matinvent.crystal.record import Crystal, CrystalError

    cif, _ = _nacl_cif()
    first = cif.replace("_cell_length_c   5.64000000", "_cell_length_c   0.001")
    assert first != cif
    second = cif.replace("data_NaCl", "data_two").replace("  Cl  Cl1  1", "  Vac  Cl1  1")
    with pytest.raises(CrystalError, match="data block 2: .*Vac"):  # refused, not read as NaV
        Crystal.from_cif(first + second)
    assert len(Crystal.from_cif(cif + cif.replace("data_NaCl", "data_two")).Z) == 2  # two good blocks still read
