"""Files written before the move into subpackages (commit 3ce3fb0) still load and give the same results.

``tests/data/pre_move/`` holds a tiny prior, a run folder written by ``matinvent optimize`` with it,
and ``expected.json``: what ``make_expected.py`` gave with the code of that commit (three samples of
each bundled prior, the run resumed from budget 8 to 12, its hits exported). The same script, run
with today's code, must give the same values.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "data" / "pre_move"


@pytest.fixture(scope="module")
def make_expected():
    spec = importlib.util.spec_from_file_location("make_expected", HERE / "make_expected.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def expected():
    return json.loads((HERE / "expected.json").read_text())


def close(a, b, tol=1e-5):
    """Nested lists/dicts equal, floats within ``tol`` (absolute)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return (a is None and b is None) or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol
    return a == b


@pytest.mark.parametrize("name", ["mp20_masked", "mp20_small", "mp20_base"])
def test_bundled_priors_sample_what_they_sampled_before_the_move(make_expected, expected, name):
    now = make_expected.sampled(name)
    assert [s["formula"] for s in now] == [s["formula"] for s in expected["samples"][name]]
    assert close(now, expected["samples"][name])


# what later releases added, and what it must read for a run that never relaxed (issue 31)
NEW_SUMMARY = {"evals_per_surviving_hit": None, "survival": None, "surviving_hits": None, "unique_by": "formula"}
NEW_EXPORT = {"structure": "generated"}


def without(d: dict, added: dict) -> dict:
    """``d`` less the ``added`` keys, each checked to hold its value."""
    for k, v in added.items():
        assert d.get(k, v) == v, (k, d.get(k))
    return {k: x for k, x in d.items() if k not in added}


def test_a_run_folder_written_before_the_move_resumes_to_the_same_rows(make_expected, expected, tmp_path):
    now = json.loads(json.dumps(make_expected.resumed(tmp_path), default=str))
    assert now["before"] == expected["resume"]["before"]  # the committed folder itself is untouched
    assert len(now["after"]) > len(now["before"])
    assert close(now["after"], expected["resume"]["after"])
    assert close(without(now["summary"], NEW_SUMMARY), expected["resume"]["summary"])


def test_its_hits_export_as_before(make_expected, expected, tmp_path):
    now = json.loads(json.dumps(make_expected.exported(tmp_path), default=str))
    assert len(now) == len(expected["export"]) == 8  # the 8 hits of the committed folder
    now = [{**e, "info": without(e["info"], NEW_EXPORT)} if "info" in e else e for e in now]
    assert close(now, expected["export"])


def test_report_reads_the_run_folder(tmp_path):
    from matinvent.report.markdown import write_report

    write_report([HERE / "run"], tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "wide_density" in text and "matinvent" in text
