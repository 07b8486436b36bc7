"""Asynchronous momentum between passes: measured staleness in, the momentum every shard should hold out."""

from __future__ import annotations

from decimal import Decimal

import pytest

from paceline.api import parse_momentum_tuning
from paceline.controller.retune import AsyncControl, count_dropped, persisted, restore, retune_step

SPEEDS = {f"w{i}": 100.0 for i in range(4)}


def test_an_explicit_momentum_of_zero_is_kept_and_re_sent_as_zero() -> None:
    settings = parse_momentum_tuning({"policy": "Fixed", "floor": "0"}, target=Decimal("0"))
    state = AsyncControl.create(settings=settings, workers=4, initial_explicit=0.0)
    for _ in range(3):
        retune = retune_step(state, staleness={0: ([3, 3, 3], 3)}, worker_speeds=SPEEDS)
        assert retune is not None and retune.momentum == 0.0 and retune.version == 1


def test_a_retune_bumps_the_version_and_reads_each_shards_log_from_where_it_left() -> None:
    settings = parse_momentum_tuning({}, target=Decimal("0.9"))
    state = AsyncControl.create(settings=settings, workers=4, initial_explicit=0.15)
    logs = {"uid-ps0": ([3] * 500, 500), "uid-ps1": ([3] * 40, 40)}
    assert retune_step(state, staleness=logs, worker_speeds={}) is None
    assert state.cursors == {"uid-ps0": 500, "uid-ps1": 40}
    # a new PS pod (shard 1 restarted): its log is read from 0, the old incarnation's position is kept apart
    assert retune_step(state, staleness={"uid-ps1b": ([2] * 7, 7)}, worker_speeds={}) is None
    assert state.cursors == {"uid-ps0": 500, "uid-ps1": 40, "uid-ps1b": 7}
    retune = retune_step(state, staleness={}, worker_speeds={**SPEEDS, "w4": 100.0, "w5": 100.0})
    assert retune is not None and retune.applied is not None and retune.version == 2
    assert state.explicit == retune.momentum and state.status["explicit"] == f"{retune.momentum:.3f}"


def _state(workers: int = 4) -> AsyncControl:
    settings = parse_momentum_tuning({}, target=Decimal("0.9"))
    return AsyncControl.create(settings=settings, workers=workers, initial_explicit=0.15)


def test_the_state_persisted_in_the_status_resumes_exactly_after_an_operator_restart() -> None:
    settings = parse_momentum_tuning({}, target=Decimal("0.9"))
    before = _state()
    retune_step(before, staleness={"uid-ps0": ([1, 2, 0, 5] * 50, 200)}, worker_speeds=SPEEDS)
    retune_step(before, staleness={"uid-ps0": ([6, 7] * 30, 260)}, worker_speeds={**SPEEDS, "w0": 300.0})
    count_dropped(before, {"uid-ps0": 3}, running={"uid-ps0"})
    before.controller.observe_curvature([12.5])
    retune_step(before, staleness={}, worker_speeds=SPEEDS, curvature={"w0": 12.5})
    text = persisted(before)
    after = restore(text, settings=settings, workers=4, initial_explicit=0.15)
    assert after is not None
    assert (after.version, after.explicit, after.cursors, after.dropped_total) == (
        before.version,
        before.explicit,
        {"uid-ps0": 260},
        3,
    )
    assert after.version > 1  # the shards hold a later version than the first: PUTs keep going up
    restored, original = after.controller.estimator.estimate(), before.controller.estimator.estimate()
    assert restored.implicit == original.implicit and restored.effective_samples == original.effective_samples
    assert restored.delays == pytest.approx(original.delays, abs=1e-6)  # the histogram keeps 6 decimals
    assert after.controller.curvature.value == 12.5 and after.curvature_seen == {"w0": 12.5}
    assert persisted(after) == text
    # both go on identically: the same τ values give the same decision (not the prior's)
    one = retune_step(before, staleness={"uid-ps0": ([3] * 10, 270)}, worker_speeds=SPEEDS)
    two = retune_step(after, staleness={"uid-ps0": ([3] * 10, 270)}, worker_speeds=SPEEDS)
    assert one is not None and two is not None
    assert (one.version, one.momentum) == (two.version, two.momentum) and before.status == after.status


def test_a_state_that_does_not_fit_starts_from_the_prior_or_is_refused() -> None:
    settings = parse_momentum_tuning({}, target=Decimal("0.9"))
    before = _state()
    retune_step(before, staleness={"uid-ps0": ([9] * 300, 300)}, worker_speeds=SPEEDS)
    other = restore(persisted(before), settings=settings, workers=2, initial_explicit=0.15)
    assert other is not None and other.version == before.version  # versions and positions stay
    assert other.controller.estimator.estimate() == _state(workers=2).controller.estimator.estimate()
    for bad in ("", "{}", "[1]", '{"format": 1}', persisted(before).replace('"version":', '"version":-')):
        assert restore(bad, settings=settings, workers=4, initial_explicit=0.15) is None


def test_dropped_updates_are_totalled_across_shard_restarts() -> None:
    state = _state()
    count_dropped(state, {"uid-a": 4, "uid-b": 1}, running={"uid-a", "uid-b"})
    count_dropped(state, {"uid-a": None, "uid-b": 2}, running={"uid-a", "uid-b"})  # a missed scrape
    assert state.dropped_total == 6
    count_dropped(state, {"uid-a2": 0, "uid-b": 2}, running={"uid-a2", "uid-b"})  # shard a restarted
    assert state.dropped_total == 6 and state.dropped == {"uid-a2": 0, "uid-b": 2}
    count_dropped(state, {"uid-a2": 5, "uid-b": 2}, running={"uid-a2", "uid-b"})
    assert state.dropped_total == 11


def test_each_curvature_estimate_counts_once_however_often_its_gauge_is_scraped() -> None:
    state = _state()
    retune_step(state, staleness={}, worker_speeds=SPEEDS, curvature={"w0": 2.0})
    assert state.controller.curvature.value == 2.0
    for _ in range(20):  # the gauge still holds the same estimate: not fed again
        retune_step(state, staleness={}, worker_speeds=SPEEDS, curvature={"w0": 2.0, "w1": 4.0})
    once = _state()
    once.controller.observe_curvature([2.0, 4.0])
    assert state.controller.curvature.value == once.controller.curvature.value
    retune_step(state, staleness={}, worker_speeds=SPEEDS, curvature={"w0": 6.0, "w1": 4.0})
    once.controller.observe_curvature([6.0])
    assert state.controller.curvature.value == once.controller.curvature.value
