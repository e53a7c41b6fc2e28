"""Chemical-space constraints: parsing, validation errors that name the key, presets, configs and task files."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest
import torch

from matinvent.cli.constraint_args import add_constraint_arguments, constraints_from_args
from matinvent.config_io import ConfigError
from matinvent.crystal.constraints import PRESETS, ChemConstraints, merged_constraints
from matinvent.prior.type_constraints import TypeConstraint
from matinvent.rl import load_rl_config
from matinvent.scoring.tasks import builtin_tasks, load_task, task_from_dict

PROPS = {"band_gap": {"target": "range", "center": 3.0, "tolerance": 0.5}}


def test_canonical_mapping_sorts_by_atomic_number_and_round_trips():
    c = ChemConstraints.from_dict({"elements": "O,Li,P,Fe", "exclude": ["Pu", "Np"], "natoms": "4:12"})
    d = c.to_dict()
    assert d == {
        "elements": ["Li", "O", "P", "Fe"],
        "exclude": ["Np", "Pu"],
        "chemsys": None,
        "max_elements": None,
        "natoms": [4, 12],
    }
    assert ChemConstraints.from_dict(d) == c
    assert not ChemConstraints().active and c.active
    assert ChemConstraints(chemsys="O-Li-Fe-P").chemsys == "Fe-Li-O-P"  # pymatgen's alphabetical chemical system


def test_no_radioactive_preset_bans_tc_pm_and_everything_from_po():
    c = ChemConstraints.from_dict({"preset": "no-radioactive"})
    for banned in ("Tc", "Pm", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Og"):
        assert banned in c.exclude and banned not in c.allowed
    for kept in ("H", "Fe", "Mo", "Ru", "Nd", "Sm", "Bi", "Pb"):
        assert kept in c.allowed
    assert len(c.exclude) == 2 + (118 - 84 + 1)
    assert "no-radioactive" in PRESETS


def test_shipped_paper_tasks_keep_the_full_periodic_table():
    assert all(load_task(name).constraints is None for name in builtin_tasks())


@pytest.mark.parametrize(
    ("data", "key", "bad"),
    [
        ({"elements": ["Li", "Xx"]}, "elements", "Xx"),
        ({"elements": "li,O"}, "elements", "Li?"),
        ({"exclude": "Np,Q"}, "exclude", "Q"),
        ({"chemsys": "Li-Fe-Qq"}, "chemsys", "Qq"),
        ({"elements": "Np,Pu", "exclude": "Np,Pu"}, "no element is left", "exclude"),
        ({"elements": "U", "preset": "no-radioactive"}, "no element is left", "preset"),
        ({"natoms": [8, 4]}, "natoms", "min 8 > max 4"),
        ({"natoms": [0, 4]}, "natoms", "got 0"),
        ({"natoms": "4-8"}, "natoms", "integer"),
        ({"natoms": [1, 2, 3]}, "natoms", "[1, 2, 3]"),
        ({"max_elements": 0}, "max_elements", "got 0"),
        ({"max_elements": True}, "max_elements", "True"),
        ({"max_elements": 2, "chemsys": "Li-Fe-P-O"}, "max_elements", "below the 4 elements"),
        ({"chemsys": "Li-Fe-O", "exclude": "Fe"}, "chemsys", "Fe excluded"),
        ({"chemsys": "Li-Fe-O", "elements": "Li,O"}, "chemsys", "Fe not in 'elements'"),
        ({"chemsys": "Li-Fe-O", "natoms": [1, 2]}, "natoms", "cannot hold the 3 elements"),
        ({"preset": "no-toxic"}, "preset", "no-toxic"),
        ({"element": "Li"}, "element", "known:"),
        ("Li,Fe", "mapping", "Li,Fe"),
    ],
)
def test_bad_constraints_name_the_key_and_the_value(data, key, bad):
    with pytest.raises(ConfigError) as err:
        ChemConstraints.from_dict(data)
    assert key in str(err.value) and bad in str(err.value)


def test_combine_keeps_what_both_allow():
    a = ChemConstraints(elements="Li,Fe,P,O,Mn", max_elements=4, natoms=(2, 12))
    b = ChemConstraints(elements="Li,Fe,O,Co", exclude="Fe", max_elements=3, natoms=(6, 20))
    c = a.combine(b)
    assert c.allowed == {"Li", "O"} and c.max_elements == 3 and c.natoms == (6, 12)
    assert merged_constraints(None, a.to_dict(), b) == c
    with pytest.raises(ConfigError, match="chemsys.*two different"):
        ChemConstraints(chemsys="Li-O").combine(ChemConstraints(chemsys="Na-Cl"))
    with pytest.raises(ConfigError, match="natoms.*do not overlap"):
        ChemConstraints(natoms=(1, 3)).combine(ChemConstraints(natoms=(5, 8)))


def test_allows_checks_every_part():
    c = ChemConstraints(chemsys="Li-Fe-O", max_elements=3, natoms=(3, 6))
    assert c.allows(["Li", "Fe", "O"]) and c.allows(["Li", "Li", "Fe", "O", "O"])
    assert not c.allows(["Li", "O", "O"])  # Fe missing
    assert not c.allows(["Li", "Fe", "O", "P"])  # P outside the system
    assert not c.allows(["Li", "Fe", "O"] * 3)  # 9 atoms


def test_rl_config_key_is_validated_and_stored_canonically(tmp_path):
    path = tmp_path / "opt.yaml"
    path.write_text("constraints:\n  chemsys: Li-Fe-P-O\n  natoms: 4:16\n  preset: no-radioactive\n")
    cfg = load_rl_config(path)
    assert cfg.constraints["chemsys"] == "Fe-Li-O-P" and cfg.constraints["natoms"] == [4, 16]
    assert "Pu" in cfg.constraints["exclude"] and "preset" not in cfg.constraints
    path.write_text("constraints:\n  max_elements: -1\n")
    with pytest.raises(ConfigError) as err:
        load_rl_config(path)
    assert str(path) in str(err.value) and "'constraints'" in str(err.value) and "max_elements" in str(err.value)


def test_task_file_constraints_are_parsed_and_errors_name_the_file():
    task = task_from_dict({"name": "t", "properties": PROPS, "constraints": {"exclude": "Np,Pu"}}, "t.yaml")
    assert task.constraints == ChemConstraints(exclude={"Np", "Pu"})
    with pytest.raises(ConfigError) as err:
        task_from_dict({"name": "t", "properties": PROPS, "constraints": {"elements": "Li,Zz"}}, "t.yaml")
    assert "task file t.yaml" in str(err.value) and "'constraints'" in str(err.value) and "Zz" in str(err.value)


def test_cli_options_parse_and_errors_name_the_option():
    parser = argparse.ArgumentParser()
    add_constraint_arguments(parser)
    args = parser.parse_args(["--elements", "Li,Fe,P,O", "--exclude", "Fe", "--max-elements", "2", "--natoms", "3:9"])
    c = constraints_from_args(args)
    assert c.allowed == {"Li", "P", "O"} and c.exclude == {"Fe"} and c.max_elements == 2 and c.natoms == (3, 9)
    assert not constraints_from_args(parser.parse_args([])).active
    assert "Pu" in constraints_from_args(parser.parse_args(["--preset", "no-radioactive"])).exclude
    with pytest.raises(ConfigError, match="--max-elements must be >= 1"):
        constraints_from_args(parser.parse_args(["--max-elements", "0"]))
    with pytest.raises(ConfigError, match="--natoms: min 9 > max 3"):
        constraints_from_args(parser.parse_args(["--natoms", "9:3"]))


def test_parsing_constraints_does_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        from matinvent.crystal.constraints import ChemConstraints
        ChemConstraints.from_dict({"chemsys": "Li-Fe-P-O", "preset": "no-radioactive"})
        print("torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_compiling_for_a_prior_checks_its_vocabulary_and_atom_counts():
    prob = torch.zeros(21, dtype=torch.float64)
    prob[2:13] = 1.0  # the prior draws 2..12 atoms
    tc = TypeConstraint.build(ChemConstraints(elements="H,O,Fm", natoms=(3, 5)), 100, prob, "prior 'p'")
    assert tc.allowed.nonzero().squeeze(-1).tolist() == [0, 7, 99]  # Z - 1
    assert tc.natoms.nonzero().squeeze(-1).tolist() == [3, 4, 5]
    with pytest.raises(ConfigError, match=r"natoms': 1:5 lies outside the atom counts 2:12 of prior 'p'"):
        TypeConstraint.build(ChemConstraints(natoms=(1, 5)), 100, prob, "prior 'p'")
    with pytest.raises(ConfigError, match=r"natoms': 10:20 lies outside"):
        TypeConstraint.build(ChemConstraints(natoms=(10, 20)), 100, prob, "prior 'p'")
    with pytest.raises(ConfigError, match=r"'elements': Md, Og lie beyond the 100 element types .* of prior 'p'"):
        TypeConstraint.build(ChemConstraints(elements="Li,Md,Og"), 100, prob, "prior 'p'")
    no_rad = TypeConstraint.build(ChemConstraints.from_dict({"preset": "no-radioactive"}), 100, prob)
    assert int(no_rad.allowed.sum()) == 100 - 2 - (100 - 84 + 1)
    chemsys = TypeConstraint.build(ChemConstraints(chemsys="Li-Fe-P-O"), 100, prob)
    assert chemsys.natoms.nonzero().squeeze(-1).tolist() == list(range(4, 13))  # at least one atom per element


def test_a_prior_without_type_logits_refuses_constraints_by_name(make_model):
    from matinvent.prior.denoiser import DenoiserConfig
    from matinvent.prior.diffusion_config import DiffusionConfig
    from matinvent.prior.model import CrystalDiffusion

    eps = CrystalDiffusion(
        DenoiserConfig(hidden=8, layers=1, n_freq=2, time_dim=8), DiffusionConfig(timesteps=10, type_prediction="eps")
    )
    with pytest.raises(ConfigError, match="prior 'eps_prior' predicts ε.*type_prediction: eps"):
        eps.set_constraints(ChemConstraints(elements="Li,O"), source="prior 'eps_prior'")
    eps.set_constraints(ChemConstraints())  # nothing constrained: fine
    assert eps.constraint is None
    for td in ("gaussian", "masked"):  # the shipped priors' kinds: x0-predicted Gaussian one-hots, masked types
        model = make_model(type_diffusion=td)
        model.set_constraints(ChemConstraints(elements="Li,O"))
        assert model.constraint is not None


def test_cli_optimize_passes_the_options_into_the_run_config(monkeypatch, tmp_path):
    import matinvent.rl
    from matinvent.cli import main

    seen = {}

    def fake_optimize(task, method, budget, seed, out, cfg, **kwargs):
        seen["cfg"] = cfg
        return {"method": method, "task": task, "evaluations": 0, "hits": 0, "burden": None, "diversity_ratio": None}

    monkeypatch.setattr(matinvent.rl, "optimize", fake_optimize)
    config = tmp_path / "opt.yaml"
    config.write_text("constraints:\n  max_elements: 3\n")
    argv = ["optimize", "--task", "T1", "--budget", "5", "--out", str(tmp_path / "run"), "--config", str(config)]
    assert main([*argv, "--chemsys", "Li-O", "--natoms", "2:6"]) == 0
    assert seen["cfg"].constraints == ChemConstraints(chemsys="Li-O", max_elements=3, natoms=(2, 6)).to_dict()
    assert main([*argv, "--elements", "Li,Qq"]) == 2  # a clean error, before anything runs


def test_cli_sample_writes_only_crystals_inside_the_constraints(make_model, tmp_path, capsys):
    from ase.data import chemical_symbols

    from matinvent.cli import main
    from matinvent.io.sample_folder import read_sample_folder
    from matinvent.prior.checkpoint import save_prior

    prior = save_prior(make_model(type_diffusion="masked"), tmp_path / "prior")
    out = tmp_path / "samples"
    flags = ["--elements", "Li,Na,K,O,S", "--exclude", "S", "--max-elements", "2", "--natoms", "3:5"]
    argv = ["sample", "--n", "6", "--steps", "4", "--checkpoint", str(prior), "--out", str(out), *flags]
    assert main(argv) == 0
    spec = ChemConstraints(elements="Li,Na,K,O,S", exclude="S", max_elements=2, natoms=(3, 5))
    folder = read_sample_folder(out)
    assert folder.manifest["constraints"] == spec.to_dict()
    written = [c for c in folder.crystals if c is not None]  # an untrained prior leaves some cells degenerate
    assert written and all(spec.allows([chemical_symbols[z] for z in c.Z]) for c in written)
    assert main([*argv[:-2], "--natoms", "3:50", "--overwrite"]) == 2
    assert "natoms" in capsys.readouterr().err
