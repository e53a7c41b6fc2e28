"""Loading the MLIP calculators: model names, and user checkpoints behind a weights-only check."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from matinvent.oracles import mlip

needs_sevenn = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra (sevenn)")
needs_chgnet = pytest.mark.skipif(importlib.util.find_spec("chgnet") is None, reason="needs the mlip extra (chgnet)")


class Exploit:
    """Unpickling this calls os.system: a checkpoint that runs code."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/matinvent-should-not-exist",))


def mgo_atoms():
    s = Structure(Lattice([[0, 2.1, 2.1], [2.1, 0, 2.1], [2.1, 2.1, 0]]), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])
    return AseAtomsAdaptor.get_atoms(s)


def test_model_names_and_energy_scales():
    assert mlip.model_spec("SevenNet-0") == mlip.ModelSpec("sevenn", "7net-0", True)
    assert mlip.model_spec("chgnet").mp2020_correction is False
    with pytest.raises(ValueError, match="unknown MLIP model 'mace'"):
        mlip.model_spec("mace")


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "payload": Exploit()}, path)
    marker = Path("/tmp/matinvent-should-not-exist")
    marker.unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"evil\.pth: not loadable with weights_only=True"):
        mlip.load_weights_only(path)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="MLIP checkpoint not found"):
        mlip.load_weights_only(tmp_path / "missing.pth")


def test_weights_only_reads_tensors_and_numpy(tmp_path):
    import numpy as np

    path = tmp_path / "ok.pth"
    torch.save({"w": torch.ones(2), "shift": np.arange(3.0), "config": {"cutoff": 5.0}}, path)
    data = mlip.load_weights_only(path)
    assert data["config"] == {"cutoff": 5.0} and data["shift"].tolist() == [0.0, 1.0, 2.0]


@needs_sevenn
def test_sevennet_checkpoint_path_gives_the_pretrained_energies(tmp_path):
    import sevenn

    shipped = next((Path(sevenn.__file__).parent / "pretrained_potentials").glob("SevenNet_0__11Jul2024/*.pth"))
    atoms = mgo_atoms()
    atoms.calc = mlip.load_calculator("sevennet-0")
    pretrained = atoms.get_potential_energy()
    atoms.calc = mlip.load_calculator("sevennet-0", checkpoint=shipped)
    assert atoms.get_potential_energy() == pytest.approx(pretrained, abs=1e-6)
    wrong = tmp_path / "plain.pth"
    torch.save({"state_dict": {}}, wrong)
    with pytest.raises(ValueError, match="not a SevenNet checkpoint"):
        mlip.load_calculator("sevennet-0", checkpoint=wrong)


@needs_chgnet
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad:UserWarning")
def test_chgnet_checkpoint_path_gives_the_pretrained_energies():
    import chgnet

    shipped = Path(chgnet.__file__).parent / "pretrained" / "0.3.0" / "chgnet_0.3.0_e29f68s314m37.pth.tar"
    atoms = mgo_atoms()
    atoms.calc = mlip.load_calculator("chgnet")
    pretrained = atoms.get_potential_energy()
    relaxer = mlip.MLIPRelaxer("chgnet", checkpoint=shipped, max_steps=5)
    atoms.calc = relaxer.calculator
    assert atoms.get_potential_energy() == pytest.approx(pretrained, abs=1e-5)


@needs_sevenn
def test_relaxer_checks_its_checkpoint_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError, match="MLIP checkpoint not found"):
        mlip.MLIPRelaxer("sevennet-0", checkpoint=tmp_path / "missing.pth")
    evil = tmp_path / "evil.pth"
    torch.save({"payload": Exploit()}, evil)
    with pytest.raises(ValueError, match="weights_only"):
        mlip.MLIPRelaxer("sevennet-0", checkpoint=evil)
