"""The oracle protocol and the structure-only oracles (density, HHI) and the shell-command oracle."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pymatgen.analysis.hhi import HHIModel
from pymatgen.core import Element, Lattice, Structure

from matinvent.crystal.record import Crystal
from matinvent.oracles import HHI, CommandOracle, Density, Oracle, OracleError, available_oracles, get_oracle

AVOGADRO = 6.02214076e23


def rocksalt(a: float, cation: str, anion: str) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def structures() -> dict[str, Structure]:
    return {
        "Si": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.468), ["Si"], [[0, 0, 0]]),
        "NaCl": rocksalt(5.69, "Na", "Cl"),
        "MgO": rocksalt(4.21, "Mg", "O"),
        "SrTiO3": Structure(
            Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
        "W": Structure(Lattice.cubic(3.165), ["W", "W"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }  # fmt: skip


def test_density_is_mass_over_volume(structures):
    values = Density()(list(structures.values()))
    for s, rho in zip(structures.values(), values, strict=True):
        mass_g = sum(float(Element(site.specie.symbol).atomic_mass) for site in s) / AVOGADRO
        volume_cm3 = s.lattice.volume * 1e-24
        assert rho == pytest.approx(mass_g / volume_cm3, rel=1e-6)  # pymatgen rounds the amu → g factor
    assert values[list(structures).index("W")] == pytest.approx(19.26, abs=0.05)


def test_hhi_equals_pymatgen_and_missing_data_is_nan(structures):
    values = HHI()(list(structures.values()))
    expected = [HHIModel().get_hhi_production(s.composition) for s in structures.values()]
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    reserve = HHI(kind="reserve")([structures["MgO"]])[0]
    assert reserve == pytest.approx(HHIModel().get_hhi_reserve(structures["MgO"].composition))
    # pymatgen has no HHI for noble gases: it returns None silently; we return NaN, the rest go on
    ne = Structure(Lattice.cubic(4.4), ["Ne"], [[0, 0, 0]])
    out = HHI()([structures["MgO"], ne, structures["W"]])
    assert math.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()


def test_oracles_accept_crystal_records_and_none(structures):
    c = Crystal.from_structure(structures["NaCl"])
    out = Density()([c, None, structures["NaCl"]])
    assert out[0] == pytest.approx(out[2]) and math.isnan(out[1])


class Flaky(Oracle):
    """Fails on any structure that contains Cl, even inside a batch."""

    name, unit = "flaky", "1"

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, structures):
        self.calls += 1
        if any("Cl" in s.composition for s in structures):
            raise RuntimeError("cannot do chlorides")
        return [len(s) for s in structures]


def test_one_bad_structure_never_fails_the_batch(structures):
    oracle = Flaky()
    batch = [structures["MgO"], structures["NaCl"], structures["W"]]
    out = oracle(batch)
    assert out[0] == len(structures["MgO"]) and out[2] == 2 and math.isnan(out[1])


def test_registry_builds_builtins_and_rejects_unknown_names():
    assert {"density", "hhi", "band_gap", "formation_energy", "bulk_modulus", "shear_modulus"} <= set(
        available_oracles()
    )
    assert isinstance(get_oracle("density"), Density)
    with pytest.raises(OracleError, match="unknown oracle 'nope'.*density"):
        get_oracle("nope")


def test_registry_metadata_is_the_classes_own():
    from matinvent.oracles import builtin_oracles, oracle_unit
    from matinvent.oracles.cgcnn import CGCNNBandGap

    table = builtin_oracles()
    assert set(table) == {"density", "hhi", "n_elements", "band_gap", "formation_energy", "bulk_modulus",
                          "shear_modulus", "e_above_hull", "static_e_above_hull", "max_force"}  # fmt: skip
    for name, cls in table.items():
        assert issubclass(cls, Oracle) and cls.name == name and cls.description, name
    assert table["band_gap"] is CGCNNBandGap and oracle_unit("band_gap") == "eV" and oracle_unit("density") == "g/cm^3"
    assert oracle_unit("e_above_hull") == "eV/atom" and oracle_unit("no_such_oracle") == ""


def test_listing_the_oracles_loads_no_model():
    code = (
        "import sys\nfrom matinvent.oracles import builtin_oracles\nbuiltin_oracles()\n"
        "heavy = [m for m in ('torch', 'sevenn', 'chgnet') if m in sys.modules]\nassert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "oracle.py"
    path.write_text(textwrap.dedent(body))
    return f"{sys.executable} {path} {{input}}"


def test_command_oracle_reads_one_number_per_structure(tmp_path, structures):
    cmd = _script(
        tmp_path,
        """
        import sys
        from pymatgen.core import Structure
        s = Structure.from_file(sys.argv[1])
        print("some log line")
        print(len(s) * 1.5)
        """,
    )
    out = CommandOracle("natoms15", cmd, timeout=60)([structures["MgO"], structures["SrTiO3"]])
    np.testing.assert_allclose(out, [len(structures["MgO"]) * 1.5, 7.5])


def test_command_oracle_failures_and_timeouts_give_nan(tmp_path, structures):
    cmd = _script(
        tmp_path,
        """
        import sys, time
        text = open(sys.argv[1]).read()
        if "Cl" in text:
            sys.exit(3)            # non-zero exit
        if "Sr" in text:
            time.sleep(30)         # timeout
        if "W" in text:
            print("not a number")  # unparsable
        else:
            print(42)
        """,
    )
    oracle = CommandOracle("picky", cmd, timeout=2.0)
    out = oracle([structures["NaCl"], structures["SrTiO3"], structures["W"], structures["MgO"]])
    assert np.isnan(out[:3]).all() and out[3] == 42


def test_command_oracle_rejects_bad_settings():
    with pytest.raises(ValueError, match="must contain '\\{input\\}'"):
        CommandOracle("x", "echo 1")
    with pytest.raises(ValueError, match="timeout"):
        CommandOracle("x", "cat {input}", timeout=0)
    with pytest.raises(ValueError, match="file_format"):
        CommandOracle("x", "cat {input}", file_format="poscar")
