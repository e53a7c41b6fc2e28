"""MLIP elastic properties: VRH moduli from pymatgen's ElasticTensor, pinned to the hand-written fit they replaced.

The pinned numbers were computed with the former ``oracles/mlip.py`` (its own VRH formulas and a
``np.polyfit`` stress–strain slope per Voigt component) before it was removed.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matinvent.oracles import mlip

needs_sevenn = pytest.mark.skipif(importlib.util.find_spec("sevenn") is None, reason="needs the mlip extra (sevenn)")

# a low-symmetry, positive-definite stiffness matrix (GPa), Voigt order xx yy zz yz xz xy
LOW_SYMMETRY_C = np.array(
    [
        [250.0, 110.0, 95.0, 8.0, -5.0, 3.0],
        [110.0, 230.0, 100.0, -4.0, 6.0, 2.0],
        [95.0, 100.0, 210.0, 5.0, 3.0, -6.0],
        [8.0, -4.0, 5.0, 70.0, 4.0, 2.0],
        [-5.0, 6.0, 3.0, 4.0, 60.0, 5.0],
        [3.0, 2.0, -6.0, 2.0, 5.0, 80.0],
    ]
)
OLD_FIT_LOW_SYMMETRY = (143.79299549112227, 66.75925196898794)  # (K_VRH, G_VRH) GPa of the hand-written formulas
# SevenNet-0, MLIPRelaxer(max_steps=60) defaults (strain 1 %, 4 points, 50 inner steps), hand-written fit
OLD_FIT_SI = {"k_vrh": 95.89385805415418, "g_vrh": 56.47361206965908, "k_eos": 95.29018877417691}
OLD_FIT_SI_C = {"C11": 151.603, "C12": 68.04, "C44": 69.1}


def test_vrh_of_isotropic_tensor():
    lam, mu = 50.0, 30.0  # Lamé constants, GPa
    c = np.zeros((6, 6))
    c[:3, :3] = lam
    c[np.arange(3), np.arange(3)] = lam + 2 * mu
    c[np.arange(3, 6), np.arange(3, 6)] = mu
    k, g = mlip.vrh_moduli(c)
    assert k == pytest.approx(lam + 2 * mu / 3) and g == pytest.approx(mu)


def test_elastic_tensor_vrh_equals_the_old_fit_on_a_low_symmetry_tensor():
    k, g = mlip.vrh_moduli(LOW_SYMMETRY_C)
    assert (k, g) == pytest.approx(OLD_FIT_LOW_SYMMETRY, rel=1e-9)
    # an asymmetric finite-strain tensor is symmetrised first, as before
    noisy = LOW_SYMMETRY_C + np.triu(np.full((6, 6), 0.4), 1)
    assert mlip.vrh_moduli(noisy) == pytest.approx(mlip.vrh_moduli(0.5 * (noisy + noisy.T)), rel=1e-12)


def test_vrh_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match="6×6"):
        mlip.vrh_moduli(np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        mlip.vrh_moduli(np.full((6, 6), np.nan))


def test_voigt_strain_uses_engineering_shear():
    assert np.array_equal(mlip.voigt_strain(0, 0.01), np.diag([0.01, 0.0, 0.0]))
    yz = mlip.voigt_strain(3, 0.01)
    assert yz[1, 2] == yz[2, 1] == pytest.approx(0.005) and np.count_nonzero(yz) == 2


@needs_sevenn
def test_si_moduli_sevennet_match_the_old_fit():
    relaxer = mlip.MLIPRelaxer("sevennet-0", max_steps=60)
    fcc = Lattice([[0, 2.734, 2.734], [2.734, 0, 2.734], [2.734, 2.734, 0]])  # a = 5.468 Å
    si = Structure(fcc, ["Si"] * 2, [[0] * 3, [0.25] * 3])
    k = mlip.MLIPBulkModulus(relaxer)([si])[0]
    g = mlip.MLIPShearModulus(relaxer)([si])[0]
    assert k == pytest.approx(98.0, rel=0.15) and 45.0 < g < 80.0  # experiment: K 98, G ~ 65 GPa
    c = relaxer.relaxed(si).properties["elastic_tensor"]
    np.testing.assert_allclose(c, c.T, atol=2.0)
    assert (c[0, 0], c[0, 1], c[3, 3]) == pytest.approx(tuple(OLD_FIT_SI_C.values()), abs=0.05)
    assert g == pytest.approx(OLD_FIT_SI["g_vrh"], abs=0.01)
    assert mlip.vrh_moduli(c)[0] == pytest.approx(OLD_FIT_SI["k_vrh"], abs=0.01)
    assert k == pytest.approx(OLD_FIT_SI["k_eos"], abs=0.01)
    assert mlip.vrh_moduli(c)[0] == pytest.approx(k, rel=0.05)  # tensor and E(V) agree on K
    assert relaxer.n_relaxations == 1
