"""Defects the fuzz suite (benchmarks/fuzz_inputs.py) found after #12 parts 1-5, each with its clean outcome."""

from __future__ import annotations

import json

import pytest
from rl_toy import save_tiny_prior

from matinvent.checkpoint import load_prior
from matinvent.config import ConfigError
from matinvent.memory import Memory
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


@pytest.mark.parametrize("field", ["occupancy", "coordinate"])
def test_a_dot_in_an_atom_site_is_refused_not_read_as_zero(field):
    from matinvent.crystal import Crystal, CrystalError

    cif, row = _nacl_cif()
    parts = row.split()
    if field == "occupancy":
        parts[-1] = "."
    else:
        parts[3] = "."
    with pytest.raises(CrystalError, match="'\\.'"):
        Crystal.from_cif(cif.replace(row, "  ".join(parts)))
    assert len(Crystal.from_cif(cif).Z) == 2  # the unmodified CIF reads both atoms


def test_every_data_block_of_a_multi_block_cif_is_checked():
    from matinvent.crystal import Crystal, CrystalError

    cif, _ = _nacl_cif()
    first = cif.replace("_cell_length_c   5.64000000", "_cell_length_c   0.001")
    assert first != cif
    second = cif.replace("data_NaCl", "data_two").replace("  Cl  Cl1  1", "  Vac  Cl1  1")
    with pytest.raises(CrystalError, match="data block 2: .*Vac"):  # refused, not read as NaV
        Crystal.from_cif(first + second)
    assert len(Crystal.from_cif(cif + cif.replace("data_NaCl", "data_two")).Z) == 2  # two good blocks still read
