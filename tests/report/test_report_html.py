"""report.html: self-contained page, same metrics as report.md, symmetry and CIFs, bands ≥ 0, and a real headless
Chromium (Debian's chromium + chromium-driver through selenium) that renders it without console errors."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from matinvent.cli import main
from matinvent.io.run_memory import CrystalRecord, Memory
from matinvent.report import structure_view
from matinvent.report.html import curve_figures, write_html_report
from matinvent.report.markdown import write_report
from matinvent.report.runs import load_runs
from matinvent.report.structure_view import cell_images, symmetry

ROCKSALT = {"NaCl": 5.64, "KCl": 6.29, "LiF": 4.03, "MgO": 4.21}  # Å


def _rocksalt(formula: str) -> Structure:
    cation, anion = re.findall(r"[A-Z][a-z]?", formula)
    a = ROCKSALT[formula]
    return Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [cation, anion], [[0] * 3, [0.5] * 3]
    )


def _silicon() -> Structure:
    a = 5.431
    return Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Si", "Si"], [[0] * 3, [0.25] * 3]
    )


def _wurtzite() -> Structure:
    u = 0.382
    coords = [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]]
    return Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"], coords)


def _make_run(root: Path, name: str, structures: list[Structure], reward_mean: list[float]) -> Path:
    """A finished run folder: every structure a valid hit with band_gap 3.0 eV; curves with wide ± std."""
    run = root / name
    run.mkdir()
    mem = Memory(run / "memory.sqlite", ["band_gap"])
    records = []
    for i, s in enumerate(structures):
        f = s.composition.reduced_formula
        records.append(
            CrystalRecord(run_id=name, method="reinforce", iteration=i // 4, idx=i, formula=f, cif=s.to(fmt="cif"),
                          valid=True, failed=False, properties={"band_gap": 3.0}, reward=1.0 - 0.01 * i,
                          filtered_reward=1.0, hit=True)
        )  # fmt: skip
    mem.add(records)
    mem.close()
    n = len(reward_mean)
    curves = {
        "iteration": range(n), "samples": [4 * (k + 1) for k in range(n)], "evaluations": [4 * k + 4 for k in range(n)],
        "reward_mean": reward_mean, "reward_std": [0.4] * n, "band_gap_mean": [0.2] * n, "band_gap_std": [0.9] * n,
        "hits": [min(4 * (k + 1), len(structures)) for k in range(n)], "elapsed": [2.0 * (k + 1) for k in range(n)],
    }  # fmt: skip
    pd.DataFrame(curves).to_csv(run / "metrics.csv", index=False)
    summary = {"task": "band_gap", "method": "reinforce", "seed": 3, "properties": ["band_gap"], "budget": 40}
    (run / "summary.json").write_text(json.dumps(summary | {"windows": "band_gap 3 ± 0.25", "wall_s": 20.0}))
    target = {"prop": "band_gap", "kind": "range", "center": 3.0, "tolerance": 0.25, "threshold": None, "ramp": 3.0}
    info = {"task": "band_gap", "method": "reinforce", "seed": 3, "run_id": name, "config": {}}
    (run / "run.json").write_text(json.dumps(info | {"task_definition": {"reduce": "min", "targets": [target]}}))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    a = _make_run(root, "runA", [_rocksalt(f) for f in ROCKSALT], [0.1, 0.3, 0.6])  # 4 distinct hits
    b = _make_run(root, "runB", [_silicon(), _wurtzite()], [0.05, 0.2])
    return a, b


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory) -> Path:
    return write_html_report(list(runs), tmp_path_factory.mktemp("html"), top=10)


N_CANDIDATES = 6  # 4 in runA, 2 in runB


# ----------------------------------------------------------------------------------- without a browser


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes (script contents are text, not tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(text)
    assert [t for t, a in parser.tags if "src" in a] == [] and [t for t, _ in parser.tags if t == "link"] == []
    hrefs = [a["href"] for t, a in parser.tags if a.get("href")]
    assert hrefs and all(h.startswith("candidates/") and h.endswith(".cif") for h in hrefs)  # local CIFs only
    assert sum(t == "script" for t, _ in parser.tags) > N_CANDIDATES
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs()[-2000:] in text  # the bundle itself, inlined
    assert text.count('class="structure-viewer"') == N_CANDIDATES
    ids = re.findall(r'class="structure-viewer" id="(viewer-\d+-\d+)"', text)
    assert ids[:2] == ["viewer-0-1", "viewer-0-2"] and ids[-1] == "viewer-1-2" and len(set(ids)) == N_CANDIDATES


def _html_row(text: str, first: str) -> list[str]:
    for row in re.findall(r"<tr>(.*?)</tr>", text, flags=re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, flags=re.S)]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r}")


def test_metrics_match_report_md(runs, page, tmp_path):
    md = write_report(list(runs), tmp_path, top=10).read_text()
    text = page.read_text(encoding="utf-8")
    for name in ("runA", "runB"):
        md_row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in md_row.strip("|").split("|")]
        assert _html_row(text, name) == cells
    row = _html_row(text, "runA")
    assert (row[4], row[7]) == ("4", "4")  # evaluations, hits


def test_candidates_table_space_groups_units_and_cifs(runs, page):
    text = page.read_text(encoding="utf-8")
    assert "<th>band_gap (eV)</th>" in text and "<th>E_hull (eV/atom)</th>" in text
    assert _html_row(text, "1")[1:4] == ["NaCl", "yes", "Fm-3m (225)"]  # runA's best reward first
    si = re.search(r"<tr><td>1</td><td>Si</td>.*?</tr>", text, flags=re.S).group(0)
    assert "Fd-3m (227)" in si
    zno = re.search(r"<tr><td>2</td><td>ZnO</td>.*?</tr>", text, flags=re.S).group(0)
    assert "P6_3mc (186)" in zno
    cand = page.parent / "candidates"
    matcher = StructureMatcher()
    for p1 in sorted(p for p in cand.glob("*.cif") if not p.name.endswith("_sym.cif")):
        sym = p1.with_name(p1.stem + "_sym.cif")
        assert f'href="candidates/{sym.name}"' in text and f'href="candidates/{p1.name}"' in text
        a, b = Structure.from_file(p1), Structure.from_file(sym)
        assert matcher.fit(a, b), p1.name
    assert len(list(cand.glob("*_sym.cif"))) == N_CANDIDATES
    zno_sym = (cand / "runB_2_ZnO_sym.cif").read_text()
    assert "P6_3mc" in zno_sym and "_symmetry_Int_Tables_number   186" in zno_sym


def test_symmetry_of_known_structures():
    cases = [(_rocksalt("NaCl"), "Fm-3m", 225), (_silicon(), "Fd-3m", 227), (_wurtzite(), "P6_3mc", 186)]
    for s, symbol, number in cases:
        sym = symmetry(s, symprec=0.1)
        assert (sym.symbol, sym.number, sym.label) == (symbol, number, f"{symbol} ({number})")
        assert f"_symmetry_Int_Tables_number   {number}" in sym.cif
        assert StructureMatcher().fit(s, Structure.from_str(sym.cif, fmt="cif"))
    rattled = _rocksalt("NaCl").copy()
    rattled.translate_sites([1], [0.004, -0.003, 0.002], frac_coords=True)  # ~0.02 Å off
    assert symmetry(rattled, symprec=0.1).number == 225 and symmetry(rattled, symprec=1e-4).number < 225


def test_failed_symmetry_falls_back_to_p1(runs, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("spglib found nothing")

    monkeypatch.setattr(structure_view, "SpacegroupAnalyzer", broken)
    sym = symmetry(_silicon())
    assert sym.number is None and sym.cif is None and sym.label == "?" and "P1 CIF only" in sym.note
    text = write_html_report([runs[1]], tmp_path, top=5).read_text(encoding="utf-8")
    assert not list((tmp_path / "candidates").glob("*_sym.cif"))
    assert "spglib found nothing" in text and 'href="candidates/runB_1_Si.cif"' in text


def test_bands_never_below_zero(runs):
    figs = dict(curve_figures(load_runs(list(runs))))
    assert set(figs) == {"curve-reward", "curve-hits", "curve-prop-0"}
    for key, low in (("curve-reward", 0.1 - 0.4), ("curve-prop-0", 0.2 - 0.9)):
        bands = [t for t in figs[key].data if t.fill == "toself"]
        assert len(bands) == 2 and low < 0  # mean - std would be negative ...
        assert all(np.min(t.y) == 0.0 for t in bands)  # ... the band stops at 0
    assert all(np.max(t.y) <= 1.0 for t in figs["curve-reward"].data)
    assert figs["curve-prop-0"].layout.yaxis.title.text == "band_gap (eV)"
    assert figs["curve-reward"].layout.xaxis.title.text == "oracle evaluations (cumulative)"
    (window,) = figs["curve-prop-0"].layout.shapes
    assert (window.y0, window.y1) == (2.75, 3.25)  # from run.json's numbers
    assert figs["curve-hits"].layout.yaxis.rangemode == "nonnegative"  # a count, even with 0 hits


def test_an_energy_above_hull_band_may_go_below_zero():
    from matinvent.report.plots import band

    lo, hi = band("e_above_hull", np.array([-0.2, 0.05]), np.array([0.1, 0.1]))  # below the thinned hull
    np.testing.assert_allclose(lo, [-0.3, -0.05])
    np.testing.assert_allclose(hi, [-0.1, 0.15])
    lo, _ = band("band_gap", np.array([0.1]), np.array([0.5]))
    assert lo[0] == 0.0


def test_e_hull_from_recheck_csv(runs, tmp_path):
    run = tmp_path / "runB"
    shutil.copytree(runs[1], run)
    pd.DataFrame({"id": [2, 99], "formula": ["ZnO", "X"], "e_above_hull": [0.0421, 0.5]}).to_csv(run / "recheck.csv")
    text = write_html_report([run], tmp_path / "out").read_text(encoding="utf-8")
    assert _html_row(text, "2")[5] == "0.042 (recheck (relaxed))" and _html_row(text, "1")[5] == "-"
    pd.DataFrame({"id": [2]}).to_csv(run / "recheck.csv")
    with pytest.raises(ValueError, match=r"recheck\.csv: needs the columns 'id' and 'e_above_hull'"):
        write_html_report([run], tmp_path / "out")


def test_a_relaxed_run_shows_both_crystals_the_loops_e_hull_drop_and_rmsd(tmp_path):
    run = tmp_path / "relaxed"
    run.mkdir()
    generated, relaxed = _rocksalt("NaCl"), _rocksalt("NaCl")
    generated.scale_lattice(generated.volume * 1.3)  # the loop relaxed it back to rocksalt's cell
    mem = Memory(run / "memory.sqlite", ["band_gap"])
    mem.add(
        [CrystalRecord(run_id="relaxed", method="matinvent", iteration=0, idx=0, formula="NaCl",
                       cif=generated.to(fmt="cif"), valid=True, failed=False, properties={"band_gap": 3.0},
                       reward=1.0, filtered_reward=1.0, hit=True, relaxed_cif=relaxed.to(fmt="cif"), e_hull=0.0123,
                       energy_drop=0.456, rmsd=0.0789)]
    )  # fmt: skip
    mem.close()
    pd.DataFrame({"iteration": [0], "samples": [4], "evaluations": [1], "reward_mean": [1.0], "reward_std": [0.0],
                  "hits": [1], "elapsed": [1.0]}).to_csv(run / "metrics.csv", index=False)  # fmt: skip
    (run / "summary.json").write_text(json.dumps({"task": "band_gap", "method": "matinvent", "seed": 0,
                                                  "properties": ["band_gap"], "budget": 1}))  # fmt: skip
    (run / "run.json").write_text(json.dumps({"task": "band_gap", "method": "matinvent", "seed": 0, "run_id": "r",
                                              "config": {}}))  # fmt: skip
    out = tmp_path / "out"
    text = write_html_report([run], out).read_text(encoding="utf-8")
    row = _html_row(text, "1")
    assert "0.012 (loop relaxation)" in row and "0.456" in row and "0.079" in row
    assert "P1 (generated) · relaxed" in row[-1]
    files = {p.name: p for p in (out / "candidates").glob("*.cif")}
    p1, rel = files["relaxed_1_NaCl.cif"], files["relaxed_1_NaCl_relaxed.cif"]
    assert Structure.from_file(rel).volume == pytest.approx(relaxed.volume, rel=1e-4)
    assert Structure.from_file(p1).volume == pytest.approx(generated.volume, rel=1e-4)
    assert "Fm-3m" in row[3] and "(relaxed)" in text  # symmetry and the 3-D view of the relaxed cell


def test_cell_images_repeat_atoms_on_faces():
    coords, owner = cell_images(np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.5, 0.999999]]))
    assert len(coords) == 8 + 1 + 4 and list(owner[:3]) == [0, 1, 2]
    assert {tuple(c) for c in coords[owner == 2]} == {(0, 0.5, 0), (1, 0.5, 0), (0, 0.5, 1), (1, 0.5, 1)}


def test_cli_html(runs, tmp_path, capsys):
    assert main(["report", str(runs[1]), "--html", "--out", str(tmp_path), "--top", "1", "--symprec", "0.05"]) == 0
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.html").exists()
    assert "report.html" in capsys.readouterr().out
    with pytest.raises(ValueError, match="symprec must be > 0"):
        write_html_report([runs[1]], tmp_path, symprec=0)


# ----------------------------------------------------------------------------------- in Chromium


def _browser_paths() -> tuple[str, str]:
    chromium = next(
        (p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None
    )
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium  # with the driver path below, selenium-manager is never run
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=640,800",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # software WebGL for the 3-D views
                "--host-resolver-rules=MAP * ~NOTFOUND"):  # fmt: skip  # no network, even if the page asked
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(60)
    hook = """window.__errors = [];
    window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
    window.addEventListener('unhandledrejection', function (e) { window.__errors.push('rejection: ' + e.reason); });"""
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": hook})
    yield driver
    driver.quit()


def _wait(driver, script: str, what: str, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(script), what)


def test_report_in_chromium(browser, runs, tmp_path):
    page = write_html_report(list(runs), tmp_path, top=3, max_live_viewers=2)  # 3 + 2 viewers, 2 kept drawn
    n_viewers = 5
    browser.get(page.resolve().as_uri())
    _wait(browser, "return document.querySelectorAll('.curve-plot.js-plotly-plot .main-svg').length >= 3", "curves")
    viewers = browser.execute_script("return document.querySelectorAll('.structure-viewer').length")
    assert viewers == n_viewers
    external = browser.execute_script(
        "return Array.from(document.querySelectorAll('script[src], link[href], img[src], iframe[src]')).length"
        " + performance.getEntriesByType('resource').length"
    )
    assert external == 0  # no script/link/img source and nothing fetched at all
    for k in range(n_viewers):  # every viewer draws when scrolled to; only 2 stay drawn out of view
        browser.execute_script(f"document.querySelectorAll('.structure-viewer')[{k}].scrollIntoView()")
        box = f"document.querySelectorAll('.structure-viewer')[{k}]"
        _wait(
            browser, f"return {box}.dataset.rendered === '1' && {box}.querySelector('canvas') !== null", f"viewer {k}"
        )
    counts = browser.execute_script(
        "return [document.querySelectorAll('.structure-viewer[data-rendered]').length,"
        " document.querySelectorAll('.structure-viewer .js-plotly-plot').length]"
    )
    assert counts == [n_viewers, 2]
    browser.execute_script("document.getElementById('viewer-0-1').scrollIntoView()")  # released: drawn again
    _wait(browser, "return document.querySelector('#viewer-0-1 .js-plotly-plot canvas') !== null", "redraw viewer 1")
    path = tmp_path / "report.png"
    assert browser.save_screenshot(str(path)) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    errors = browser.execute_script("return window.__errors")
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [] and severe == [], (errors, severe)
    # the capture itself works: an uncaught exception in a page script shows up in both
    probe = "setTimeout(function () { throw new Error('probe-exception'); }, 0)"
    browser.execute_script(f"var s = document.createElement('script'); s.textContent = {probe!r};"
                           " document.body.appendChild(s)")  # fmt: skip
    _wait(browser, "return window.__errors.length > 0", "probe")
    assert "probe-exception" in browser.execute_script("return window.__errors")[0]
    assert any("probe-exception" in e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE")
