"""The element-balance filter (rl/element_balance.py), against hand-worked numbers."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from matinvent.rl.element_balance import ElementBalance, reference_frequencies

REF = {"A": 0.5, "B": 0.25, "C": 0.25}


def test_factors_follow_the_smoothed_window_frequencies():
    eb = ElementBalance(strength=1.0, window=10, pseudo=4.0, reference=REF)
    assert eb.factor(["A", "B"]) == 1.0  # an empty window: q = p
    for _ in range(4):
        eb.add(["A", "B"])
    # counts A 4, B 4 (8 occurrences): q_A = (4 + 4·0.5)/12 = 1/2, q_B = (4 + 4·0.25)/12 = 5/12, q_C = 1/12
    assert eb.factor(["A"]) == pytest.approx(1.0)  # at its reference frequency
    assert eb.factor(["B"]) == pytest.approx(0.25 / (5 / 12))  # 0.6: over-used
    assert eb.factor(["C"]) == 1.0  # under-used elements are not boosted
    assert eb.factor(["A", "B", "C"]) == pytest.approx(0.6)
    squared = ElementBalance(strength=2.0, window=10, pseudo=4.0, reference=REF)
    for _ in range(4):
        squared.add(["A", "B"])
    assert squared.factor(["B"]) == pytest.approx(0.36)


def test_unknown_elements_count_at_the_rarest_reference_frequency():
    eb = ElementBalance(strength=1.0, window=10, pseudo=4.0, reference=REF)
    eb.add(["X"])  # q_X = (1 + 4·0.25)/5 = 0.4 with p_X = 0.25
    assert eb.factor(["X"]) == pytest.approx(0.25 / 0.4)


def test_only_the_last_window_crystals_count():
    eb = ElementBalance(strength=1.0, window=3, pseudo=1.0, reference=REF)
    for _ in range(3):
        eb.add(["B"])
    assert eb.factor(["B"]) < 0.5
    for _ in range(3):
        eb.add(["A"])  # B has left the window
    assert eb.factor(["B"]) == 1.0 and eb.counts == {"A": 3}


def test_a_batch_is_filtered_in_order_and_the_state_round_trips():
    eb = ElementBalance(strength=1.0, window=50, pseudo=2.0, reference=REF)
    sets = [["B"], ["B"], ["B", "C"], ["A"]]
    got = eb(sets, [1.0, 1.0, 0.5, 0.8])
    # by hand: before crystal 1 the window is empty (factor 1); before crystal 2, counts B 1 of 1:
    # q_B = (1 + 2·0.25)/3 = 0.5 → 0.5; before crystal 3, B 2 of 2: q_B = 2.5/4 → 0.4, q_C = 0.5/4 → 1
    np.testing.assert_allclose(got, [1.0, 0.5, 0.5 * 0.4, 0.8])
    clone = ElementBalance(strength=1.0, window=50, pseudo=2.0, reference=REF)
    clone.load_state_dict(json.loads(json.dumps(eb.state_dict())))
    assert clone.counts == eb.counts and clone.factor(["B", "C"]) == eb.factor(["B", "C"])


def test_the_shipped_reference_is_mp20s_element_frequencies():
    """Same definition as evaluate's element_frequencies; O leads MP-20 (in 25 % of its crystals), then Li."""
    ref = reference_frequencies()
    assert sum(ref.values()) == pytest.approx(1.0, abs=1e-4)
    top = sorted(ref, key=ref.get, reverse=True)[:2]
    assert top == ["O", "Li"] and len(ref) > 80
    data = json.loads((resources.files("matinvent") / "data" / "mp20_element_frequencies.json").read_text())
    n, per_crystal = data["crystals"], 2.98  # distinct elements per MP-20 crystal
    assert ref["F"] * per_crystal * n == pytest.approx(1121, rel=0.01)  # 1,121 of the 15,837 contain F


@pytest.mark.parametrize("text", ["{", '{"frequencies": {"O": -1}}', '{"x": 1}', '{"frequencies": {}}'])
def test_a_bad_reference_file_names_the_file(tmp_path, text):
    path = tmp_path / "freq.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="freq.json"):
        reference_frequencies(path)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="strength"):
        ElementBalance(strength=-1.0, reference=REF)


def test_reference_start_freezes_the_runs_first_window_and_guards_drift_only():
    eb = ElementBalance(strength=1.0, window=4, pseudo=4.0, reference="start")
    first = [["A", "B"], ["A"], ["A", "C"], ["A"]]  # frozen p: A 4/6, B 1/6, C 1/6
    got = eb(first, [1.0] * 4)
    np.testing.assert_allclose(got, 1.0)  # no reference yet: nothing is damped
    assert eb.p == pytest.approx({"A": 4 / 6, "B": 1 / 6, "C": 1 / 6})
    assert eb.factor(["A"]) == pytest.approx(1.0)  # the window still equals the reference
    for _ in range(4):
        eb.add(["B"])  # drift to B: the window now holds B only, q_B = (4 + 4·1/6)/(4 + 4) = 7/12
    assert eb.factor(["B"]) == pytest.approx((1 / 6) / (7 / 12))
    clone = ElementBalance(strength=1.0, window=4, pseudo=4.0, reference="start")
    clone.load_state_dict(json.loads(json.dumps(eb.state_dict())))  # the frozen p survives a resume
    assert clone.p == eb.p and clone.factor(["B"]) == eb.factor(["B"])


def test_an_unknown_reference_is_refused():
    with pytest.raises(ValueError, match="'start'"):
        ElementBalance(strength=1.0, reference="mp21")
