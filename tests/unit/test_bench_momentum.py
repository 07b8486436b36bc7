"""The momentum benchmark's bootstrap interval over evaluation seeds (a pure function of the run results)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from momentum import paired_ratio_interval

updates = st.lists(st.integers(min_value=100, max_value=8001), min_size=1, max_size=12)


@given(updates, st.data())
def test_the_interval_lies_within_what_any_resample_can_give(auto: list[int], data: st.DataObject) -> None:
    best = data.draw(st.lists(st.integers(100, 8001), min_size=len(auto), max_size=len(auto)))
    low, high = paired_ratio_interval([float(a) for a in auto], [float(b) for b in best], draws=400)
    assert min(auto) / max(best) <= low <= high <= max(auto) / min(best)


def test_equal_runs_give_a_point_and_noisy_runs_a_wide_interval() -> None:
    assert paired_ratio_interval([800.0] * 6, [800.0] * 6) == (1.0, 1.0)
    low, high = paired_ratio_interval([800.0, 1600.0, 820.0, 790.0, 1700.0, 810.0], [800.0] * 6)
    assert low <= 1.0 < 1.5 <= high


def test_the_interval_is_reproducible_and_needs_paired_results() -> None:
    auto, best = [900.0, 1000.0, 1210.0, 850.0], [800.0, 840.0, 1020.0, 790.0]
    assert paired_ratio_interval(auto, best) == paired_ratio_interval(auto, best)
    with pytest.raises(ValueError, match="one automatic and one fixed"):
        paired_ratio_interval(auto, best[:3])
