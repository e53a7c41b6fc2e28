"""benchmarks/rl_tables.py: the numbers of Tables 1–4 follow their formulas on hand-made run folders."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import rl_tables  # noqa: E402


def _run(root: Path, name: str, evaluations: int, hits: int, recheck: dict | None = None, seed: int = 0) -> Path:
    p = root / name
    p.mkdir()
    summary = {
        "seed": seed,
        "finished": True,
        "evaluations": evaluations,
        "hits": hits,
        "burden": None,
        "diversity_ratio": 0.9,
    }
    if recheck is not None:
        summary["recheck"] = recheck
    (p / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"seconds": [10.0, 2.0, 4.0]}).to_csv(p / "metrics.csv", index=False)
    return p


def test_surviving_burden_pools_rechecked_and_hitless_runs(tmp_path: Path) -> None:
    a = _run(
        tmp_path, "a", 600, 10, {"n_hits_distinct": 10, "n_checked": 3, "frac_survive": 1 / 3, "frac_still_hit": 2 / 3}
    )
    b = _run(tmp_path, "b", 600, 0, seed=1)
    c = _run(tmp_path, "c", 600, 5, seed=2)  # hits not re-checked yet: left out of the surviving figure
    row = rl_tables.run_row([a, b, c])
    assert row["surviving_runs"] == 2
    assert row["evals_per_surviving_hit"] == pytest.approx(1200 / (10 / 3))
    # the plain figure: evaluations per hit per seed, one seed without hits makes the mean infinite
    assert row["burden_is_evals_per_hit"] is True
    assert math.isinf(row["burden_mean"])
    assert row["pooled_evals_per_hit"] == pytest.approx(1800 / 15)
    assert row["seconds_per_iteration"] == pytest.approx(3.0)  # first iteration (warm-up) left out
    assert row["recheck_runs"] == 1 and row["recheck_frac_survive"] == pytest.approx(1 / 3)
    assert (row["recheck_checked"], row["recheck_still_hit"], row["recheck_survive"]) == (3, 2, 1)


def test_no_survivor_is_infinite_and_no_recheck_is_none(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", 600, 4, {"n_hits_distinct": 4, "n_checked": 4, "frac_survive": 0.0, "frac_still_hit": 0.5})
    assert math.isinf(rl_tables.run_row([a])["evals_per_surviving_hit"])
    b = _run(tmp_path, "b", 600, 4)
    assert rl_tables.run_row([b])["evals_per_surviving_hit"] is None


def test_markdown_shows_both_burdens_and_the_papers_diversity(tmp_path: Path) -> None:
    a = _run(
        tmp_path,
        "a",
        600,
        12,
        {"n_hits_distinct": 12, "n_checked": 4, "frac_survive": 0.5, "frac_still_hit": 1.0, "n_far_below_hull": 1},
    )
    row = rl_tables.run_row([a])
    row.update(task="band_gap", method="matinvent", ratio_to_prior=None, ratio_large=None)
    row.update(paper_burden=(14.4, 1.3), paper_burden_over_1000=False)
    text = rl_tables.markdown({"budget": 600, "machine": "m", "config": "c", "overrides": {}, "rows": [row]})
    line = next(x for x in text.splitlines() if x.startswith("| band_gap | matinvent"))
    cells = [x.strip() for x in line.strip("|").split("|")]
    header = next(x for x in text.splitlines() if x.startswith("| task"))
    names = [x.strip() for x in header.strip("|").split("|")]
    got = dict(zip(names, cells, strict=True))
    assert got["Burden ↓"] == "50.0 ± 0.0*"
    assert got["per surviving hit"] == "100.0 (n = 1)"
    assert got["re-checked"] == "4/4 / 2/4 (1 runs; 1 far below hull)"
    assert got["paper div."] == "0.970"
    assert got["paper Burden"] == "14.4 ± 1.3"


def test_paper_diversity_and_large_sample_bound() -> None:
    assert rl_tables.paper_diversity("hhi", "prior") == 0.961
    assert rl_tables.paper_diversity("hhi", "weighted-denoising") is None
    ratio, bound = rl_tables.large_sample_ratio(60.0, {"distinct_hits": 0, "evals_per_hit": None,
                                                       "evals_per_hit_ci95": [1200.0, math.inf]})  # fmt: skip
    assert bound is True and ratio == pytest.approx(0.05)
    assert rl_tables.large_sample_ratio(60.0, {"distinct_hits": 3, "evals_per_hit": 30.0}) == (2.0, False)


def test_keep_rows_fills_missing_cells_and_feeds_the_prior_ratio(tmp_path: Path) -> None:
    import argparse

    import rl_tasks

    runs = tmp_path / "runs"
    runs.mkdir()
    for seed in (7, 8):
        _run(runs, f"hhi_matinvent_s{seed}", 600, 20, seed=seed)  # 30 evaluations per hit
    rows = [
        {"task": "hhi", "method": "prior", "burden_mean": 60.0, "hits": [10, 10]},
        {"task": "hhi", "method": "matinvent", "burden_mean": 99.0, "hits": [1, 1]},
    ]
    earlier = {"config": "c.yaml", "overrides": {"beta": 1.0}, "budget": 600, "rows": rows,
               "config_values": {"beta": 1.0, "epochs": 2}}  # fmt: skip
    (runs / "config_budget600.yaml").write_text("beta: 1.0\nepochs: 4\n")
    keep = tmp_path / "earlier.json"
    keep.write_text(json.dumps(earlier))
    args = argparse.Namespace(
        tasks=["hhi"], methods=["prior", "matinvent"], seeds=[7, 8], runs=runs, prior_rates=None, keep_rows=[keep],
        jobs=2, budget=600, set=[],
    )  # fmt: skip
    result = rl_tasks.table(args)
    rows = {r["method"]: r for r in result["rows"]}
    assert result["kept_origins"] == {
        str(keep): f"{keep} (c.yaml + {{'beta': 1.0}}, budget 600); differs in epochs 2 there, 4 here"
    }
    assert result["config_values"] == {"beta": 1.0, "epochs": 4}
    assert rows["prior"]["kept_from"] == str(keep)  # no prior run folders here: the earlier row
    assert "kept_from" not in rows["matinvent"]  # run folders win over the earlier row
    assert rows["matinvent"]["burden_mean"] == pytest.approx(30.0)
    assert rows["matinvent"]["ratio_to_prior"] == pytest.approx(0.5)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="bad.json"):
        rl_tasks.kept_rows(bad)
    args.keep_rows = None
    assert rl_tasks.table(args)["kept_origins"] == {}


def test_chained_keep_rows_keep_their_first_origin_and_mark(tmp_path: Path) -> None:
    """Keeping rows from a JSON that itself kept rows: those keep their own origin (settings read from that
    file where it is still there, else the line the JSON stored), marked apart in the table."""
    import argparse

    import rl_tasks

    def row(task: str, method: str, **kw) -> dict:
        return {"task": task, "method": method, "burden_mean": 10.0, "burden_std": 1.0, "hits": [30, 30],
                "seeds": [7, 8], "finished": 2, "burden_is_evals_per_hit": True, "seconds_per_iteration": 5.0,
                "ratio_to_prior": None, "diversity_ratio_mean": 0.95, "diversity_ratio_std": 0.01,
                "recheck_runs": 0, "paper_burden": None, "paper_burden_over_1000": False, **kw}  # fmt: skip

    oldest = tmp_path / "oldest.json"
    oldest.write_text(json.dumps({"config": "c.yaml", "overrides": {}, "budget": 600, "rows": [row("hhi", "reinforce")],
                                  "config_values": {"df_tol": 3, "epochs": 4}}))  # fmt: skip
    middle = tmp_path / "middle.json"
    middle.write_text(json.dumps({
        "config": "c.yaml", "overrides": {}, "budget": 600, "config_values": {"df_tol": 0, "epochs": 4},
        "rows": [row("hhi", "matinvent"), row("hhi", "reinforce", kept_from=str(oldest)),
                 row("T1", "prior", kept_from="gone.json")],
        "kept_origins": {str(oldest): "stale line", "gone.json": "gone.json (as stored)"},
    }))  # fmt: skip
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "config_budget600.yaml").write_text("df_tol: 0\nepochs: 4\n")
    _run(runs, "T2_matinvent_s7", 600, 2, seed=7)
    args = argparse.Namespace(
        tasks=["hhi", "T1", "T2"], methods=["prior", "matinvent", "reinforce"], seeds=[7], runs=runs,
        prior_rates=None, keep_rows=[middle, oldest], jobs=1, budget=600, set=[],
    )  # fmt: skip
    result = rl_tasks.table(args)
    rows = {(r["task"], r["method"]): r for r in result["rows"]}
    assert rows[("hhi", "matinvent")]["kept_from"] == str(middle)  # measured in the middle set
    assert rows[("hhi", "reinforce")]["kept_from"] == str(oldest)  # not relabelled as the middle set's
    assert rows[("T1", "prior")]["kept_from"] == "gone.json"
    assert "kept_from" not in rows[("T2", "matinvent")]
    assert list(result["kept_origins"]) == [str(middle), str(oldest), "gone.json"]  # a second file adds no row here
    args.keep_rows = [oldest, middle]  # first wins: hhi/reinforce now from oldest directly, the rest from middle
    assert rl_tasks.table(args)["kept_origins"].keys() == {str(oldest), str(middle), "gone.json"}
    args.keep_rows = [middle, oldest]
    origins = result["kept_origins"]
    assert origins[str(middle)] == f"{middle} (c.yaml + no overrides, budget 600)"  # same settings as here
    assert origins[str(oldest)] == f"{oldest} (c.yaml + no overrides, budget 600); differs in df_tol 3 there, 0 here"
    assert origins["gone.json"] == "gone.json (as stored)"
    md = rl_tables.markdown(dict(result, machine="m"))
    marks = {line.split(" | ")[1].strip() for line in md.splitlines() if line.startswith(("| hhi", "| T1"))}
    assert "matinvent †" in marks and "reinforce ‡" in marks and "prior §" in marks
    assert f"‡ = row kept from {oldest} (c.yaml" in md and "§ = row kept from gone.json (as stored)" in md


def test_compare_table_marks_kept_rows_and_counts_targets() -> None:
    import rl_compare

    def row(task: str, method: str, ratio: float | None, div: float, surv: float | None, **kw) -> dict:
        return {"task": task, "method": method, "ratio_large": ratio, "ratio_large_is_bound": False,
                "diversity_ratio_mean": div, "hits": [3, 4], "recheck_runs": 2, "recheck_checked": 6,
                "recheck_still_hit": 4, "recheck_survive": 2, "evals_per_surviving_hit": surv, **kw}  # fmt: skip

    new = {"rows": [
        row("hhi", "matinvent", 0.15, 0.86, 11.0), row("hhi", "prior", 1.0, 0.97, 71.0),
        row("T2", "matinvent", 1.89, 0.92, math.inf, kept_from="old.json", ratio_large_is_bound=True),
        row("density", "matinvent", 0.2, 0.95, None),
    ]}  # fmt: skip
    old = {"rows": [row("hhi", "matinvent", 0.24, 0.93, 64.0)]}
    md = rl_compare.compare([("new", new), ("old", old)], "matinvent", None)
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert lines["hhi"] == "| hhi | 0.15 | 0.24 | 0.86 | [3, 4] | 4 / 2 of 6 | 11 / 64 / 71 |"
    assert lines["T2"].startswith("| T2 | < 1.89 † | – | 0.92 † |") and "none † / – / –" in lines["T2"]
    assert lines["density"].endswith("| – / – / – |")  # no re-check, no row in the other sets
    assert list(lines)[1:] == ["density", "hhi", "T2"]  # the paper's task order, not the input's
    # ≤ 0.25× with diversity ≥ 0.9: density only (hhi is under 0.9, T2's bound is above); ≤ 0.2×: hhi, density
    assert "on 1 of 3 tasks with a ratio; ≤ 0.2× on 2 of 3." in md and "† = row kept" in md


def test_saturated_counts_follow_the_filter_rule() -> None:
    import saturated_evaluations as se

    # Buff 2: the third and fourth "A" are saturated; the fourth is A's only hit, so that hit is lost without them
    rows = [("A", False), ("B", True), ("A", False), ("A", False), ("C", False), ("A", True)]
    c = se.saturated_counts(rows, buff=2)
    assert (c["evaluations"], c["saturated"], c["hits"], c["hits_only_from_saturated"]) == (6, 2, 2, 1)
    assert c["diversity_ratio"] == pytest.approx(3 / 6) and c["diversity_ratio_without"] == pytest.approx(3 / 4)
    assert c["evals_per_hit"] == pytest.approx(3.0) and c["evals_per_hit_without"] == pytest.approx(4.0)
    assert se.saturated_counts([("A", False)] * 3, buff=5)["saturated"] == 0


def test_diversity_at_600_and_3000_reads_the_first_b_evaluations_in_order(tmp_path: Path) -> None:
    import diversity_budget

    from matinvent.io.run_memory import CrystalRecord, Memory

    run = tmp_path / "density_matinvent_s0"
    run.mkdir()
    mem = Memory(run / "memory.sqlite", ["density"])
    recs = []
    for i in range(3200):  # every 4th sample invalid; formulas repeat with period 5 after 600 evaluations
        valid = i % 4 != 3
        formula = f"X{i}" if i < 800 else f"Y{i % 5}"
        recs.append(
            CrystalRecord(
                run_id="r",
                method="matinvent",
                iteration=i // 32,
                idx=i % 32,
                formula=formula,
                cif="",
                valid=valid,
                failed=False,
                properties={"density": 1.0},
                reward=0.0,
                filtered_reward=0.0,
                hit=valid and i % 8 == 0,
            )  # fmt: skip
        )
    mem.add(recs)
    mem.close()
    at = diversity_budget.at_budgets(run)
    # samples 0..799 hold 600 valid crystals, all distinct; 100 of them hits (i % 8 == 0)
    assert at[600] == {"diversity_ratio": 1.0, "hits": 100, "evals_per_hit": 6.0}
    assert 3000 not in at  # 2400 evaluations only
    at = diversity_budget.at_budgets(run, budgets=(600, 2400))
    # 2400 evaluations: 600 distinct X + 5 Y formulas; hits: 100 X + Y0 (i % 8 == 0 → i % 5 takes all values: 5 Y)
    assert at[2400]["diversity_ratio"] == pytest.approx(605 / 2400)
    assert at[2400]["hits"] == 105


def test_survival_table_pools_seeds_and_counts_why_hits_fail(tmp_path: Path) -> None:
    import survival_tasks

    def run(method: str, seed: int, ev: int, hits: int, its: int, wall: float, rc: dict) -> None:
        out = survival_tasks.run_dir(tmp_path, "density", method, seed)
        out.mkdir()
        summary = {"finished": True, "evaluations": ev, "hits": hits, "iterations": its, "wall_s": wall, "recheck": rc}
        (out / "summary.json").write_text(json.dumps(summary))

    # prior: 4 checked, 2 survive; matinvent seed 0: 10 checked, 7 survive (2 left the window, 1 above the hull),
    # seed 1: 5 checked, 5 survive; the relaxed loop's MLIP-property fraction wins over the oracle one when given
    def rc(n: int, survive: int, still: float, stable: float, **more: float) -> dict:
        return {"n_checked": n, "n_survive": survive, "frac_still_hit": still, "frac_e_hull_le_0.1": stable, **more}

    run("prior", 0, 300, 4, 10, 100.0, rc(4, 2, 0.5, 1.0))
    run("matinvent", 0, 300, 10, 20, 600.0, rc(10, 7, 0.1, 0.9, frac_still_hit_mlip=0.8))
    run("matinvent", 1, 300, 5, 10, 300.0, rc(5, 5, 1.0, 1.0))
    rows = {r["method"]: r for r in survival_tasks.summarise(tmp_path, ["density"], [0, 1])["rows"]}
    mine, prior = rows["matinvent"], rows["prior"]
    assert (mine["checked"], mine["survive"], mine["left_window"], mine["above_hull"]) == (15, 12, 2, 1)
    assert mine["evals_per_surviving_hit"] == pytest.approx(600 / 12) and prior["evals_per_surviving_hit"] == 150.0
    assert mine["ratio_to_prior"] == pytest.approx(50 / 150)
    assert mine["s_per_iteration"] == pytest.approx(900 / 30)  # pooled, not the first seed's 30 s either way
    assert (prior["left_window"], prior["above_hull"], prior["s_per_iteration"]) == (2, 0, 10.0)
    table = survival_tasks.markdown(survival_tasks.summarise(tmp_path, ["density"], [0, 1]), 300)
    assert "| density | matinvent | 2 | 600 | 15 | 15 | 12 | 0.80 | 2 | 1 | 40.0 | 50.0 | 0.333 | 30.0 |" in table
