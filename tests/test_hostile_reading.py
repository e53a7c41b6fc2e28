"""Hostile structure files and CSV rows (issue #12): each item is read on its own and refused with a reason.

One case per defect the fuzzer found: a bad file or frame never aborts the folder, invalid
structures are refused before any parsing or oracle call and never scored, and huge inputs are
refused by the cheap count checks (asserted by the parser never being called, not by timing).
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser, CifWriter

from matinvent.cli import main
from matinvent.crystal.checks import check_cell_parameters, split_xyz_frames
from matinvent.crystal.record import Crystal, CrystalError, TooManyAtomsError
from matinvent.io.cdvae_csv import read_cdvae_csv
from matinvent.io.structure_files import iter_extxyz, read_structure_items, write_extxyz
from matinvent.oracles import Density

NACL = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
KBR = Structure(Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cif_of(structure: Structure) -> str:
    return str(CifWriter(structure))


NACL_CIF = cif_of(NACL)


def edited(old: str, new: str, text: str = NACL_CIF) -> str:
    assert old in text, old  # the edit must hit, or the case tests nothing
    return text.replace(old, new, 1)


def with_value(key: str, value: str, text: str = NACL_CIF) -> str:
    """``text`` with the value of the CIF item ``key`` replaced."""
    text, n = re.subn(rf"^{key}\s+\S+$", f"{key}   {value}", text, flags=re.M)
    assert n == 1, key
    return text


def score(tmp_path, path, *options: str, warns: bool = False) -> pd.DataFrame:
    """``matinvent score PATH --task density`` (exit 0 asserted) → the output CSV indexed by id."""
    out = tmp_path / "scores.csv"
    with pytest.warns(UserWarning, match="unusable") if warns else contextlib.nullcontext():
        assert main(["score", "--relax", "none", str(path), "--task", "density", "--out", str(out), *options]) == 0
    return pd.read_csv(out, dtype={"reason": str}).fillna({"reason": ""}).set_index("id")


def density_of(structure: Structure) -> float:
    return float(Density()([structure])[0])


# --- one bad file never aborts a folder ---------------------------------------------------------
def test_latin1_byte_is_replaced_and_the_folder_scored(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "a_nacl.cif").write_text(NACL_CIF)
    (folder / "b_latin1.cif").write_bytes(b"# r\xe9sum\xe9 of a comment\n" + cif_of(KBR).encode())
    (folder / "c_garbage.cif").write_bytes(b"data_x\n\xff\xfe not a CIF\n")
    df = score(tmp_path, folder, warns=True)
    assert list(df.index) == ["a_nacl", "b_latin1", "c_garbage"]
    assert df.loc["b_latin1", "valid"] == 1 and df.loc["b_latin1", "density"] == pytest.approx(density_of(KBR))
    assert df.loc["a_nacl", "density"] == pytest.approx(density_of(NACL))
    bad = df.loc["c_garbage"]
    assert bad["valid"] == 0 and bad["reward"] == 0 and np.isnan(bad["density"])
    assert "c_garbage.cif" in bad["reason"] and "not valid UTF-8" in bad["reason"]


def test_singular_cell_frame_keeps_the_good_frames(tmp_path):
    crystals = [Crystal.from_structure(s) for s in (NACL, KBR, NACL)]
    path = tmp_path / "frames.extxyz"
    write_extxyz(crystals, path)
    lines = path.read_text().splitlines(keepends=True)
    assert lines[5].startswith("Lattice=")  # frame 1's comment line
    lines[5] = 'Lattice="6.6 0.0 0.0 13.2 0.0 0.0 0.0 0.0 6.6" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
    path.write_text("".join(lines))
    with pytest.warns(UserWarning, match="1 of 3"):
        ids, got, reasons = read_structure_items(path)
    assert ids == ["frames_000000", "frames_000001", "frames_000002"]
    assert got[0].allclose(crystals[0]) and got[2].allclose(crystals[2]) and got[1] is None
    assert reasons[0] == reasons[2] == "" and reasons[1].startswith("frames.extxyz frame 1: cell is singular")


# --- invalid cells, occupancies and symbols are refused, never scored ------------------------------
@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"b": "-3.0"}, "cell length b = -3 Å outside (0, 500]"),  # was scored 10.67 g/cm³ (|b| = 3 Å)
        ({"a": "1e30"}, "cell length a = 1e+30 Å outside (0, 500]"),
        ({"c": "nan"}, "cell length c = nan Å"),
        ({"beta": "-90.0"}, "cell angle beta = -90° outside (0, 180)"),  # pymatgen alone reads it as 90°
        ({"gamma": "180"}, "cell angle gamma = 180° outside (0, 180)"),
        ({"alpha": "170", "beta": "170"}, "cell angles (170.0, 170.0, 90.0)° make no cell"),
    ],
)
def test_absurd_cells_are_refused_and_never_get_a_density(tmp_path, values, reason):
    text = NACL_CIF
    for name, value in values.items():
        text = with_value(f"_cell_{'length' if len(name) == 1 else 'angle'}_{name}", value, text)
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "bad.cif").write_text(text)
    (folder / "good.cif").write_text(NACL_CIF)
    df = score(tmp_path, folder, warns=True)
    assert df.loc["good", "valid"] == 1 and df.loc["good", "density"] == pytest.approx(density_of(NACL))
    bad = df.loc["bad"]
    assert bad["valid"] == 0 and bad["reward"] == 0 and bad["hit"] == 0 and np.isnan(bad["density"])
    assert bad["reason"].startswith("no structure: bad.cif: ") and reason in bad["reason"]


@pytest.mark.parametrize(
    ("occupancy", "reason"),
    [
        ("0", "non-physical occupancy 0 at site Cl1"),
        ("-1", "non-physical occupancy -1 at site Cl1"),
        ("nan", "non-physical occupancy nan at site Cl1"),
        ("0.5", "partial occupancy 0.5 at site Cl1"),
        ("1.5", "occupancy 1.5 > 1 at site Cl1"),
        ("abc", "occupancy is not a number"),
    ],
)
def test_bad_occupancies_are_refused(occupancy, reason):
    text = edited("0.50000000  0.50000000  0.50000000  1\n", f"0.50000000  0.50000000  0.50000000  {occupancy}\n")
    with pytest.raises(CrystalError) as info:
        Crystal.from_cif(text)
    assert str(info.value) == reason or str(info.value).startswith(reason)


@pytest.mark.parametrize("occupancy", ["0.9995", "1.0(0)", "?"])
def test_full_occupancies_written_loosely_are_accepted(occupancy):
    text = edited("0.50000000  0.50000000  0.50000000  1\n", f"0.50000000  0.50000000  0.50000000  {occupancy}\n")
    assert Crystal.from_cif(text).Z.tolist() == [11, 17]


@pytest.mark.parametrize("symbol", ["Vac", "Unknown", "X", "Xx"])
def test_non_element_symbols_are_refused_not_read_as_elements(symbol):
    text = edited("  Cl  Cl1  ", f"  {symbol}  Cl1  ")  # pymatgen alone reads Vac as V, Unknown as U
    with pytest.raises(CrystalError, match=f"unknown element: non-element symbol '{symbol}'"):
        Crystal.from_cif(text)


def test_oxidation_state_symbols_and_label_only_cifs_are_elements():
    assert Crystal.from_cif(edited("  Cl  Cl1  ", "  Cl1-  Cl1  ")).Z.tolist() == [11, 17]
    no_types = (
        NACL_CIF.replace(" _atom_site_type_symbol\n", "").replace("  Na  Na0", "  Na0").replace("  Cl  Cl1", "  Cl1")
    )
    assert Crystal.from_cif(no_types).Z.tolist() == [11, 17]
    with pytest.raises(CrystalError, match="non-element symbol 'Vac'"):
        Crystal.from_cif(no_types.replace("  Cl1  ", "  Vac1  "))


def test_atoms_005_angstrom_apart_are_invalid_with_reward_zero(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.0125, 0, 0]])  # 0.05 Å apart
    (folder / "close.cif").write_text(cif_of(close))
    (folder / "ok.cif").write_text(NACL_CIF)
    df = score(tmp_path, folder)
    assert df.loc["close", "valid"] == 0 and df.loc["close", "reward"] == 0 and np.isnan(df.loc["close", "density"])
    assert df.loc["close", "reason"].startswith("pair Na–Cl 0.05 Å < 0.7")
    assert df.loc["ok", "valid"] == 1 and df.loc["ok", "reason"] == ""


def test_volume_per_atom_far_from_solids_is_refused_by_the_scoring_reader(tmp_path):
    sparse = Structure(Lattice.cubic(11.0), ["Na"], [[0, 0, 0]])  # 1331 Å³ per atom: a gas, not a solid
    dense = Structure(Lattice.cubic(1.5), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # 1.7 Å³ per atom
    denser = Structure(Lattice.cubic(1.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # 0.86 Å³ per atom
    for name, s in (("sparse", sparse), ("dense", dense), ("denser", denser)):
        (tmp_path / f"{name}.cif").write_text(cif_of(s))
    with pytest.warns(UserWarning, match="2 of 3"):
        ids, crystals, reasons = read_structure_items(tmp_path)
    assert ids == ["dense", "denser", "sparse"] and crystals[0] is not None
    assert reasons[1] == "denser.cif: volume per atom 0.864 Å³ outside [1, 1000]"
    assert reasons[2] == "sparse.cif: volume per atom 1.33e+03 Å³ outside [1, 1000]"
    assert Crystal.read_cif(tmp_path / "sparse.cif").num_atoms == 1  # plain reading leaves it to the validity gate
    assert check_cell_parameters((4, 4, 4), (60, 60, 60)) == ""  # fcc primitive cell
    assert "make no cell" in check_cell_parameters((4, 4, 4), (120, 120, 120))  # three coplanar vectors


# --- CSV rows get a row with a reason ------------------------------------------------------------
def test_bad_cdvae_rows_get_a_row_with_a_reason(tmp_path, data_dir):
    raw = pd.read_csv(data_dir / "broken.csv")
    with pytest.warns(UserWarning, match="3 of 9 structures unusable"):
        ids, crystals, reasons = read_structure_items(data_dir / "broken.csv")
    assert ids == raw["material_id"].tolist()
    bad = {i: r for i, c, r in zip(ids, crystals, reasons, strict=True) if c is None}
    assert sorted(bad) == ["bad-empty", "bad-garbage", "bad-unknown-element"]
    assert bad["bad-garbage"].startswith("broken.csv row 1 (bad-garbage): could not parse CIF")
    assert bad["bad-empty"] == "broken.csv row 4 (bad-empty): empty CIF"
    assert "non-element symbol 'Xx'" in bad["bad-unknown-element"]
    df = score(tmp_path, data_dir / "broken.csv", warns=True)
    assert list(df.index) == ids and df.loc["bad-empty", "valid"] == 0
    assert df.loc["bad-empty", "reason"] == "no structure: broken.csv row 4 (bad-empty): empty CIF"
    assert (df.drop(index=list(bad))["valid"] == 1).all()


def test_training_reader_still_skips_bad_rows(data_dir):
    with pytest.warns(UserWarning, match="skipped 3 of 9"):
        table = read_cdvae_csv(data_dir / "broken.csv")
    assert len(table) == 6 and None not in table.crystals and set(table.reasons) == {""}


# --- huge inputs are refused by the cheap count checks -------------------------------------------
def test_5000_atom_cif_is_refused_before_pymatgen_parses_it(tmp_path, monkeypatch):
    row = "  Na  Na{i}  1  {x:.6f}  0.25000000  0.25000000  1\n"
    big = NACL_CIF + "".join(row.format(i=i + 2, x=i / 5000) for i in range(4998))
    big = with_value("_cell_length_a", "90.0", big)
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "big.cif").write_text(big)
    (folder / "small.cif").write_text(NACL_CIF)
    parsed = []
    real = CifParser.from_str.__func__

    def spy(cls, text, *args, **kwargs):
        parsed.append(text.count("\n"))
        return real(cls, text, *args, **kwargs)

    monkeypatch.setattr(CifParser, "from_str", classmethod(spy))
    with pytest.raises(TooManyAtomsError, match="5000 atoms > max_atoms 200"):
        Crystal.read_cif(folder / "big.cif")
    assert parsed == []
    with pytest.warns(UserWarning, match="big.cif: 5000 atoms > max_atoms 200"):
        _, crystals, _ = read_structure_items(folder)
    assert crystals[0] is None and crystals[1].allclose(Crystal.from_structure(NACL), atol=1e-6)
    assert len(parsed) == 1 and parsed[0] <= NACL_CIF.count("\n")  # pymatgen parsed the small file only


def test_max_atoms_option_of_score(tmp_path):
    (tmp_path / "nacl.cif").write_text(NACL_CIF)
    df = score(tmp_path, tmp_path / "nacl.cif", "--max-atoms", "1", warns=True)
    assert df.loc["nacl", "valid"] == 0 and df.loc["nacl", "reason"] == "no structure: nacl.cif: 2 atoms > max_atoms 1"
    assert main(["score", "--relax", "none", str(tmp_path / "nacl.cif"), "--task", "density", "--max-atoms", "0"]) == 2


def test_extxyz_count_line_of_1e9_is_refused_without_reading(tmp_path, monkeypatch):
    import ase.io

    path = tmp_path / "claims.extxyz"
    write_extxyz([Crystal.from_structure(NACL)], path)
    good = path.read_text()
    big_but_whole = "300\ncomment\n" + "Na 0 0 0\n" * 300  # over max_atoms: skipped unread, the rest kept
    path.write_text(good + big_but_whole + good + "1000000000\ncomment\nNa 0 0 0\n")
    reads = []
    real = ase.io.read

    def spy(fileobj, *args, **kwargs):
        reads.append(fileobj.getvalue().count("\n"))
        return real(fileobj, *args, **kwargs)

    monkeypatch.setattr(ase.io, "read", spy)
    frames = list(iter_extxyz(path))
    assert [c is not None for _, c, _ in frames] == [True, False, True, False]
    assert frames[1][2] == "claims.extxyz frame 1: could not read extxyz: 300 atoms > max_atoms 200"
    assert frames[3][2].endswith("count line 311 claims 1000000000 atoms but only 1 lines follow")
    assert reads == [4, 4]  # ASE read the two good 2-atom frames, nothing else


def test_xyz_frames_stop_at_a_line_that_is_no_count():
    frames = list(split_xyz_frames("1\nc\nNa 0 0 0\n١٢\nc\n"))  # Arabic-Indic digits are no count
    assert frames[0] == ("1\nc\nNa 0 0 0\n", "")
    assert frames[1][0] is None and frames[1][1].startswith("line 4: expected an atom count")
