"""write_report on small fake run folders: table numbers, candidate order, CIFs, PNGs, errors, runs in progress."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from matinvent.io.run_memory import CrystalRecord, Memory
from matinvent.report import markdown as report
from matinvent.report.markdown import load_run, target_windows, top_candidates, write_report
from matinvent.report.plots import band

HAS_MPL = importlib.util.find_spec("matplotlib") is not None
PNG = b"\x89PNG\r\n\x1a\n"


def _fcc(species: list[str], a: float, x: float) -> Structure:
    """Primitive fcc cell with a 2-atom basis: rocksalt (x = 1/2) or diamond (x = 1/4)."""
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), species, [[0] * 3, [x] * 3])


@pytest.fixture(scope="module")
def cifs() -> dict[str, str]:
    structs = {
        "NaCl": _fcc(["Na", "Cl"], 5.64, 0.5),
        "MgO": _fcc(["Mg", "O"], 4.21, 0.5),
        "LiF": _fcc(["Li", "F"], 4.03, 0.5),
        "KCl": _fcc(["K", "Cl"], 6.29, 0.5),
        "Si": _fcc(["Si", "Si"], 5.431, 0.25),
    }
    for f, s in structs.items():
        assert s.composition.reduced_formula == f
    return {f: s.to(fmt="cif") for f, s in structs.items()}


# (iteration, formula, valid, failed, band_gap, reward, hit)
ROWS_A = [
    (0, "NaCl", 1, 0, 3.1, 0.90, 1),
    (0, "Si", 1, 0, 1.1, 0.50, 0),
    (0, "Na3", 0, 0, None, 0.0, 0),
    (0, "KCl", 1, 1, None, 0.0, 0),
    (1, "NaCl", 1, 0, 2.95, 0.95, 1),
    (1, "LiF", 1, 0, 4.5, 0.60, 0),
    (1, "Mg9", 0, 0, None, 0.0, 0),
    (2, "MgO", 1, 0, 2.9, 0.97, 1),
    (2, "Si", 1, 0, 1.6, 0.70, 0),
]


def _make_run(root: Path, name: str, method: str, seed: int, rows, props, cifs, summary: dict, targets=None) -> Path:
    run = root / name
    run.mkdir()
    mem = Memory(run / "memory.sqlite", props)
    mem.add(
        CrystalRecord(
            run_id=name,
            method=method,
            iteration=it,
            idx=i,
            formula=f,
            cif=cifs.get(f, "data_junk\n"),
            valid=bool(v),
            failed=bool(fl),
            properties={p: val if p == "band_gap" else (-3.0 if v and not fl else None) for p in props},
            reward=r,
            filtered_reward=r,
            hit=bool(h),
        )
        for i, (it, f, v, fl, val, r, h) in enumerate(rows)
    )
    mem.close()
    # metrics.csv by hand: per-iteration aggregates of the rows
    df = pd.DataFrame(rows, columns=["iteration", "formula", "valid", "failed", "band_gap", "reward", "hit"])
    out, hits, evals = [], set(), 0
    for it, g in df.groupby("iteration"):
        ev = g[g.valid == 1]
        evals += len(ev)
        hits |= set(ev.formula[ev.hit == 1])
        row = {"iteration": it, "samples": (df.iteration <= it).sum(), "evaluations": evals}
        row |= {"valid_rate": len(ev) / len(g), "reward_mean": ev.reward.mean(), "reward_std": ev.reward.std(ddof=0)}
        row |= {"filtered_reward_mean": ev.reward.mean()}
        for p in props:
            vals = ev.band_gap if p == "band_gap" else pd.Series([-3.0] * len(ev))
            row |= {f"{p}_mean": vals.mean(), f"{p}_std": vals.std(ddof=0)}
        row |= {"hits": len(hits), "evals_per_hit": evals / len(hits) if hits else None, "burden": None}
        row |= {"diversity_ratio": 0.7, "loss": 0.1, "kl": None, "seconds": 4.0, "elapsed": 4.0 * (it + 1)}
        out.append(row)
    pd.DataFrame(out).to_csv(run / "metrics.csv", index=False)
    base = {"method": method, "seed": seed, "properties": list(props), "prior": "mp20_small", "budget": 100}
    (run / "summary.json").write_text(json.dumps(base | summary))
    if targets is not None:  # as optimize writes it: the task definition with the windows as numbers
        definition = {"reduce": "min", "targets": targets, "oracles": {}}
        info = {"task": summary["task"], "method": method, "seed": seed, "run_id": name, "config": {}}
        (run / "run.json").write_text(json.dumps(info | {"task_definition": definition}))
    return run


@pytest.fixture
def runs(tmp_path, cifs) -> tuple[Path, Path]:
    a = _make_run(
        tmp_path,
        "runA",
        "reinforce",
        0,
        ROWS_A,
        ["band_gap"],
        cifs,
        {
            "task": "band_gap",
            "windows": "band_gap 3 ± 0.25",
            "evaluations": 7,
            "samples": 9,
            "hits": 2,
            "burden": None,
            "evals_per_hit": 3.5,
            "diversity_ratio": 5 / 7,
            "diversity_ratio_at": None,
            "validity_rate": 7 / 9,
            "iterations": 3,
            "wall_s": 12.0,
        },
    )
    rows_b = [(0, "LiF", 1, 0, 3.0, 0.99, 1), (0, "Si", 1, 0, 0.5, 0.2, 0), (1, "LiF", 1, 0, 3.05, 0.98, 1)]
    b = _make_run(
        tmp_path,
        "runB",
        "ppo",
        1,
        rows_b,
        ["band_gap", "formation_energy"],
        cifs,
        {
            "task": "T1",
            "windows": "band_gap 3 ± 0.25; formation_energy < -2.5",
            "evaluations": 1250,
            "samples": 1400,
            "hits": 120,
            "burden": 9.5,
            "evals_per_hit": 1250 / 120,
            "diversity_ratio": 0.8,
            "diversity_ratio_at": None,
            "validity_rate": 0.9,
            "iterations": 2,
            "wall_s": 3600.0,
        },
        targets=TARGETS_B,
    )
    return a, b


def _table_row(md: str, first_cell: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r} in\n{md}")


def _section(md: str, run: str) -> str:
    m = re.search(rf"^### {run}\b.*?(?=^### |\Z)", md, flags=re.M | re.S)
    assert m, md
    return m.group(0)


TARGETS_B = [
    {"prop": "band_gap", "kind": "range", "center": 3.0, "tolerance": 0.25, "threshold": None, "ramp": 3.0},
    {"prop": "formation_energy", "kind": "below", "center": None, "tolerance": None, "threshold": -2.5, "ramp": 1.0},
]


def test_target_windows_from_numbers():
    targets = [*TARGETS_B, {"prop": "bulk_modulus", "kind": "above", "threshold": 100}]
    w = target_windows({"reduce": "min", "targets": targets})
    assert w == {"band_gap": (2.75, 3.25), "formation_energy": (-math.inf, -2.5), "bulk_modulus": (100.0, math.inf)}
    assert target_windows(None) == {} and target_windows({"reduce": "min"}) == {}
    with pytest.raises(ValueError, match=r"x/run\.json: task_definition\.targets\[0\]\.center must be a number"):
        target_windows(
            {"targets": [{"prop": "band_gap", "kind": "range", "center": "3", "tolerance": 1}]}, "x/run.json"
        )
    with pytest.raises(ValueError, match=r"targets\[0\]\.kind must be"):
        target_windows({"targets": [{"prop": "band_gap", "kind": "between"}]})


def test_windows_and_units_come_from_run_json(runs):
    _, b = runs
    run = load_run(b)  # run.json holds the numbers; summary.json's text is not parsed
    assert run.windows == {"band_gap": (2.75, 3.25), "formation_energy": (-math.inf, -2.5)}
    assert run.units == {"band_gap": "eV", "formation_energy": "eV/atom"}
    (b / "run.json").unlink()  # an older folder without a task definition still reads, without numeric windows
    legacy = load_run(b)
    assert legacy.windows == {} and legacy.summary["windows"] == "band_gap 3 ± 0.25; formation_energy < -2.5"
    (b / "run.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"runB/run\.json: not valid JSON"):
        load_run(b)


def test_bands_never_leave_the_physical_range():
    mean, std = [0.1, 0.5, 0.95, 2.0], [0.3, 0.1, 0.2, 1.0]
    lo, hi = band("reward", mean, std)
    assert lo.min() >= 0.0 and hi.max() <= 1.0 and lo[1] == pytest.approx(0.4) and hi[1] == pytest.approx(0.6)
    lo, hi = band("band_gap", mean, std)
    assert lo[0] == 0.0 and hi[3] == pytest.approx(3.0)
    lo, _ = band("formation_energy", [-0.1], [0.5])  # may be negative: not clipped
    assert lo[0] == pytest.approx(-0.6)


def test_report_two_runs(runs, tmp_path, cifs):
    a, b = runs
    out = tmp_path / "out"
    path = write_report([a, b], out, top=3)
    assert path == out / "report.md"
    md = path.read_text()

    row_a = _table_row(md, "runA")
    assert row_a[1:8] == ["band_gap", "reinforce", "0", "7", "n/a", "n/a", "2"]  # no re-check: no survivors yet
    assert row_a[9] == "n/a (2 hits)"
    assert row_a[8] == "3.5" and row_a[10:12] == ["0.714 (running)", "77.8%"]
    row_b = _table_row(md, "runB")
    assert row_b[1:5] == ["T1", "ppo", "1", "1250"] and row_b[7:10] == ["120", "10.4", "9.50"]
    assert row_b[12] == "60.0 min"

    # hits first (best reward first, one row per formula), then the best non-hit valid crystal
    sec_a = _section(md, "runA")
    ranked = [_table_row(sec_a, str(k)) for k in (1, 2, 3)]
    assert [r[1] for r in ranked] == ["MgO", "NaCl", "Si"]
    assert [r[2] for r in ranked] == ["yes", "yes", ""]
    assert ranked[1][3:6] == ["2.95", "0.950", "1"]  # NaCl's best row (iteration 1), not its first
    assert "| 4 |" not in sec_a and sec_a.count("| NaCl |") == 1
    sec_b = _section(md, "runB")
    assert [_table_row(sec_b, str(k))[1] for k in (1, 2)] == ["LiF", "Si"]
    assert "formation_energy" in sec_b

    # candidate CIFs parse back to the listed formula
    cand = out / "candidates"
    for run, formulas in (("runA", ["MgO", "NaCl", "Si"]), ("runB", ["LiF", "Si"])):
        for rank, f in enumerate(formulas, start=1):
            p = cand / f"{run}_{rank}_{f}.cif"
            assert f"(candidates/{p.name})" in md
            assert Structure.from_file(p).composition.reduced_formula == f
    assert len(list(cand.glob("*.cif"))) == 5

    pngs = ["reward.png", "hits.png", "property_band_gap.png", "property_formation_energy.png"]
    if HAS_MPL:
        for name in pngs:
            assert (out / name).read_bytes()[:8] == PNG
            assert f"]({name})" in md
    assert "reinforce (seed 0)" in md and "ppo (seed 1)" in md

    # re-running with a smaller top replaces the run's old candidate files
    write_report([a], out, top=1)
    assert sorted(p.name for p in cand.glob("runA_*.cif")) == ["runA_1_MgO.cif"]


def test_default_out_dirs(runs, tmp_path, monkeypatch):
    a, b = runs
    monkeypatch.setattr(report, "plot_runs", lambda runs, out: [])  # plots are covered above; keep this fast
    assert write_report([a], top=2) == a / "report.md"
    assert (a / "candidates" / "runA_1_MgO.cif").exists()
    monkeypatch.chdir(tmp_path)
    assert write_report([a, b], top=1).resolve() == (tmp_path / "report" / "report.md").resolve()


def test_in_progress_run(runs, tmp_path):
    a, _ = runs
    live = tmp_path / "live"
    shutil.copytree(a, live)
    (live / "summary.json").unlink()
    with (live / "metrics.csv").open("a") as fh:
        fh.write("3,12,9,0.5")  # a row still being written is ignored
    md = write_report([live], tmp_path / "out_live", top=10).read_text()
    row = _table_row(md, "live (in progress)")
    assert row[1:8] == ["?", "reinforce", "?", "7", "n/a", "n/a", "2"] and row[9] == "n/a (2 hits)"
    assert row[12] == "12.0 s"
    sec = _section(md, "live")
    assert [_table_row(sec, str(k))[1] for k in (1, 2, 3, 4)] == ["MgO", "NaCl", "Si", "LiF"]
    assert "| 5 |" not in sec  # failed KCl and invalid samples are never candidates


def test_missing_files(runs, tmp_path):
    a, _ = runs
    no_mem = tmp_path / "no_memory"
    no_mem.mkdir()
    shutil.copy(a / "summary.json", no_mem)
    with pytest.raises(FileNotFoundError, match=r"no_memory.*memory\.sqlite"):
        write_report([no_mem], tmp_path / "o1")
    no_sum = tmp_path / "no_summary"
    no_sum.mkdir()
    shutil.copy(a / "memory.sqlite", no_sum)
    with pytest.raises(FileNotFoundError, match=r"no_summary.*summary\.json"):
        write_report([a, no_sum], tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        write_report([tmp_path / "nowhere"], tmp_path / "o3")


def test_without_matplotlib(runs, tmp_path, monkeypatch):
    a, _ = runs
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.warns(UserWarning, match="matplotlib"):
        md = write_report([a], tmp_path / "o", top=2).read_text()
    assert not list((tmp_path / "o").glob("*.png"))
    assert "Plots skipped" in md and "| 2 | NaCl |" in md


def test_top_candidates_empty():
    df = pd.DataFrame(columns=["valid", "failed", "hit", "formula", "reward", "iteration", "cif"])
    assert top_candidates(df, 5).empty


def test_in_progress_run_takes_task_and_seed_from_run_json(runs, tmp_path):
    a, _ = runs
    live = tmp_path / "live"
    shutil.copytree(a, live)
    (live / "summary.json").unlink()
    (live / "run.json").write_text(json.dumps({"task": "density", "method": "reinforce", "seed": 4}))
    md = write_report([live], tmp_path / "out_live", top=3).read_text()
    assert _table_row(md, "live (in progress)")[1:4] == ["density", "reinforce", "4"]


def test_overlay_styles_colour_by_method_and_dash_by_seed():
    from matinvent.report.markdown import Run
    from matinvent.report.plots import styles as _styles

    def run(method: str) -> Run:
        return Run(Path("."), method, {"method": method}, pd.DataFrame(), pd.DataFrame(), [])

    st = _styles([run("prior"), run("matinvent"), run("prior"), run("matinvent"), run("prior")])
    assert st[0]["color"] == st[2]["color"] == st[4]["color"] != st[1]["color"] == st[3]["color"]
    assert [s["ls"] for s in st] == ["-", "-", "--", "--", ":"]
