"""Targets, rewards, hits and task files."""

from __future__ import annotations

import numpy as np
import pytest

from matinvent.config_io import ConfigError
from matinvent.scoring.rewards import Target
from matinvent.scoring.tasks import builtin_tasks, load_task, task_from_dict


def test_range_reward_inside_edge_and_outside_match_the_formula():
    t = Target("band_gap", "range", center=3.0, tolerance=0.25, ramp=2.0)
    x = np.array([3.0, 3.25, 2.75, 3.75, 2.0, 5.25, 10.0, np.nan])
    expected = [1.0, 1.0, 1.0, 1 - 0.5 / 2, 1 - 0.75 / 2, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(t.reward(x), expected, atol=1e-12)
    np.testing.assert_array_equal(t.inside(x), [True, True, True, False, False, False, False, False])


def test_below_and_above_rewards_match_the_formula():
    below = Target("formation_energy", "below", threshold=-2.5, ramp=2.5)
    x = np.array([-4.0, -2.5, -1.5, 0.0, 1.0])
    np.testing.assert_allclose(below.reward(x), [1.0, 1.0, 1 - 1.0 / 2.5, 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(below.inside(x), [True, True, False, False, False])
    above = Target("k", "above", threshold=100.0, ramp=50.0)
    x = np.array([150.0, 100.0, 80.0, 40.0])
    np.testing.assert_allclose(above.reward(x), [1.0, 1.0, 1 - 20 / 50, 0.0], atol=1e-12)
    np.testing.assert_array_equal(above.inside(x), [True, True, False, False])


def _two_property_task(reduce: str):
    return task_from_dict(
        {
            "name": "two",
            "reduce": reduce,
            "properties": {
                "a": {"target": "range", "center": 0.0, "tolerance": 1.0, "ramp": 1.0, "weight": 3.0},
                "b": {"target": "below", "threshold": 0.0, "ramp": 2.0, "weight": 1.0},
            },
        }
    )


@pytest.mark.parametrize("reduce", ["min", "mean", "weighted"])
def test_multi_property_reduction_hits_and_failures(reduce):
    task = _two_property_task(reduce)
    values = {"a": np.array([0.5, 1.5, 0.0, np.nan]), "b": np.array([-1.0, 1.0, 0.5, -1.0])}
    reward, hit, failed = task.rewards(values)
    ra, rb = np.array([1.0, 0.5, 1.0, 0.0]), np.array([1.0, 0.5, 0.75, 1.0])
    expected = {"min": np.minimum(ra, rb), "mean": (ra + rb) / 2, "weighted": (3 * ra + rb) / 4}[reduce]
    expected[3] = 0.0  # a failed oracle zeroes the reward
    np.testing.assert_allclose(reward, expected, atol=1e-12)
    np.testing.assert_array_equal(hit, [True, False, False, False])
    np.testing.assert_array_equal(failed, [False, False, False, True])


def test_shipped_tasks_are_the_papers():
    assert set(builtin_tasks()) == {
        "band_gap", "formation_energy", "bulk_modulus", "shear_modulus", "density", "hhi", "T1", "T2", "T3", "T4",
        "band_gap_stable", "stability",  # ours, stability-aware (not paper tasks)
    }  # fmt: skip
    windows = {n: load_task(n).window_text() for n in builtin_tasks()}
    assert windows["band_gap"] == "band_gap 3 ± 0.25"
    assert windows["formation_energy"] == "formation_energy < -2.5"
    assert windows["bulk_modulus"] == "bulk_modulus 250 ± 20"
    assert windows["shear_modulus"] == "shear_modulus 80 ± 5"
    assert windows["density"] == "density 11 ± 0.5"
    assert windows["hhi"] == "hhi < 1250"
    assert windows["band_gap_stable"] == "band_gap 3 ± 0.25; e_above_hull 0 ± 0.1"
    assert windows["stability"] == "static_e_above_hull 0 ± 0.1; n_elements 3.5 ± 1.5"
    assert [load_task(n).relax for n in ("stability", "density")] == ["none", "auto"]
    assert load_task("T4").properties == ["bulk_modulus", "formation_energy", "hhi"]
    assert load_task("T1").properties == ["band_gap", "formation_energy"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: x\nproperties:\n  band_gap: {target: range, center: 3, tol: 0.2}\n", "properties.band_gap.tol"),
        ("name: x\nproperties:\n  band_gap: {target: inside, center: 3}\n", "properties.band_gap.target"),
        ("name: x\nproperties:\n  band_gap: {target: range, center: 3}\n", "properties.band_gap.tolerance"),
        ("name: x\nproperties:\n  hhi: {target: below, threshold: abc}\n", "properties.hhi.threshold"),
        ("name: x\nproperties:\n  hhi: {target: below, threshold: 1, ramp: 0}\n", "properties.hhi.ramp"),
        ("name: x\nreduce: max\nproperties:\n  hhi: {target: below, threshold: 1}\n", "reduce"),
        ("name: x\nrelax: mlip\nproperties:\n  hhi: {target: below, threshold: 1}\n", "relax"),
        ("name: x\nproperty:\n  hhi: {target: below, threshold: 1}\n", "property"),
        ("name: x\nproperties: {}\n", "properties"),
        ("properties:\n  hhi: {target: below, threshold: 1}\n", "name"),
        (
            "name: x\nproperties:\n  e: {target: below, threshold: 1}\noracles:\n  e: {command: run.sh}\n",
            "oracles.e.command",
        ),
    ],
)
def test_malformed_task_file_names_the_key(tmp_path, text, key):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"'{key}'|key '{key}"):
        load_task(path)


def test_unknown_task_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="unknown task 'gap'.*band_gap"):
        load_task("gap")


def test_user_task_file_with_command_oracle(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nproperties:\n  e_hull: {target: below, threshold: 0.1, ramp: 0.5}\n"
        "oracles:\n  e_hull: {command: 'my_dft {input}', unit: eV/atom, timeout: 3600}\n"
    )
    task = load_task(path)
    oracle = task.build_oracles()["e_hull"]
    assert oracle.name == "e_hull" and oracle.timeout == 3600 and oracle.argv == ["my_dft", "{input}"]


def test_a_range_with_its_own_ramp_below_the_window():
    t = Target("e", "range", center=0.0, tolerance=0.1, ramp=1.5, ramp_below=0.2)
    x = np.array([0.05, -0.1, 0.85, 1.6, -0.2, -0.3, -1.0, np.nan])
    np.testing.assert_allclose(t.reward(x), [1.0, 1.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0], atol=1e-12)
    assert t.inside(x).tolist() == [True, True, False, False, False, False, False, False]
    same = Target("e", "range", center=0.0, tolerance=0.1, ramp=1.5)  # without it: the ramp on both sides
    np.testing.assert_allclose(same.reward(np.array([-0.85, 0.85])), [0.5, 0.5])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\nproperties:\n  hhi: {target: below, threshold: 1, ramp_below: 0.2}\n", "applies to target 'range'"),
        ("name: x\nproperties:\n  e: {target: range, center: 0, tolerance: 0.1, ramp_below: 0}\n", "ramp_below"),
    ],
)
def test_ramp_below_is_checked(tmp_path, text, needle):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_task(path)
