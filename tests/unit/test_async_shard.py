"""The PS shard's pure core: exact staleness bookkeeping, the heavy-ball rule, versioned lr/momentum."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from paceline_worker.asynchronous import HyperparameterUpdate, ParameterShard, parse_update
from paceline_worker.asynchronous.hyperparameters import HyperparameterError, StaleVersionError
from paceline_worker.asynchronous.shard import ShardError


def _shard(values: list[float], *, lr: float = 1.0, momentum: float = 0.0) -> ParameterShard:
    shard = ParameterShard(shard=0)
    shard.initialise(
        fingerprint="f", values=np.array(values, dtype=np.float32), learning_rate=lr, momentum=momentum
    )
    return shard


def test_staleness_is_the_number_of_updates_between_read_and_write() -> None:
    shard = _shard([0.0])
    read = shard.read().version
    for k in range(4):
        other, _ = shard.apply(worker="b", read_version=shard.version, gradient=np.zeros(1, np.float32))
        assert other.staleness == 0
        assert other.version == read + k + 1
    late, _ = shard.apply(worker="a", read_version=read, gradient=np.zeros(1, np.float32))
    assert (late.staleness, late.read_version, late.version, late.index) == (4, read, read + 5, read + 4)
    assert [u.staleness for u in shard.updates_after(0)] == [0, 0, 0, 0, 4]
    assert [u.index for u in shard.updates_after(3)] == [3, 4]


def test_heavy_ball_rule_and_a_live_momentum_change_take_effect_at_the_next_update() -> None:
    shard = _shard([1.0, 2.0], lr=0.5, momentum=0.0)
    g = np.array([1.0, -2.0], np.float32)
    _, snap = shard.apply(worker="a", read_version=0, gradient=g)
    np.testing.assert_allclose(snap.values, [0.5, 3.0])  # buf = g
    hyper, first = shard.set_hyperparameters(
        HyperparameterUpdate(version=1, learning_rate=None, momentum=0.5)
    )
    assert (hyper.learning_rate, hyper.momentum, hyper.version, first) == (0.5, 0.5, 1, 1)
    record, snap = shard.apply(worker="a", read_version=1, gradient=g)
    assert record.momentum == 0.5
    np.testing.assert_allclose(snap.values, [0.5 - 0.5 * 1.5, 3.0 + 0.5 * 3.0])  # buf = 0.5·g + g
    shard.set_hyperparameters(HyperparameterUpdate(version=2, learning_rate=0.1, momentum=-0.2))
    _, snap2 = shard.apply(worker="a", read_version=2, gradient=np.zeros(2, np.float32))
    np.testing.assert_allclose(snap2.values, snap.values - 0.1 * (-0.2) * np.array([1.5, -3.0]), rtol=1e-6)
    history = shard.store.history() if shard.store else []
    assert [(h["version"], h["appliedAtModelVersion"]) for h in history] == [(0, 0), (1, 1), (2, 2)]


def test_the_first_update_with_a_change_is_reported_while_workers_keep_pushing() -> None:
    """A change lands between two pushes of busy worker threads: every update before the index it reports
    used the old momentum, every one from it the new (the HTTP reply once read the version after the lock)."""
    shard = _shard([0.0] * 64, lr=0.01, momentum=0.9)
    gradient = np.ones(64, np.float32)
    stop = threading.Event()

    def push() -> None:
        while not stop.is_set():
            shard.apply(worker="w", read_version=shard.version, gradient=gradient)

    def reach(version: int) -> None:
        deadline = time.monotonic() + 120  # minutes of slack for a loaded machine
        while shard.version < version:
            assert time.monotonic() < deadline, f"shard stuck at version {shard.version} < {version}"
            time.sleep(0.001)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        reach(200)
        _, first = shard.set_hyperparameters(
            HyperparameterUpdate(version=1, learning_rate=None, momentum=0.3)
        )
        reach(first + 200)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    momenta = [u.momentum for u in shard.updates_after(0)]
    assert 200 <= first < len(momenta)
    assert set(momenta[:first]) == {0.9} and set(momenta[first:]) == {0.3}


def test_only_newer_versions_are_accepted() -> None:
    shard = _shard([0.0])
    shard.set_hyperparameters(HyperparameterUpdate(version=3, learning_rate=None, momentum=0.2))
    for version in (3, 2):
        with pytest.raises(StaleVersionError, match="not newer than version 3"):
            shard.set_hyperparameters(HyperparameterUpdate(version=version, learning_rate=None, momentum=0.9))
    assert shard.hyperparameters is not None and shard.hyperparameters.momentum == 0.2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"version": 1, "momentum": 1.0}', "momentum"),
        ('{"version": 1, "learningRate": 0}', "learningRate"),
        ('{"version": -1}', "version"),
        ('{"version": true}', "version"),
        ('{"version": 1, "momentum": "0.5"}', "momentum"),
        ('{"version": 1, "beta": 0.5}', "unknown"),
        ("[1]", "object"),
        ("{", "JSON"),
    ],
)
def test_malformed_updates_say_what_to_fix(body: str, message: str) -> None:
    with pytest.raises(HyperparameterError, match=message):
        parse_update(body)


def test_environment_hyperparameters_override_the_first_worker_field_by_field() -> None:
    shard = ParameterShard(shard=0, initial=HyperparameterUpdate(version=4, learning_rate=None, momentum=0.1))
    with pytest.raises(ShardError, match="not initialised"):
        shard.set_hyperparameters(HyperparameterUpdate(version=5, learning_rate=None, momentum=0.0))
    shard.initialise(fingerprint="f", values=np.zeros(2, np.float32), learning_rate=0.3, momentum=0.9)
    assert shard.hyperparameters is not None
    assert shard.hyperparameters.to_json_dict() == {"version": 4, "learningRate": 0.3, "momentum": 0.1}


def test_refuses_other_layouts_future_versions_and_wrong_sizes() -> None:
    shard = _shard([0.0, 0.0])
    again = shard.initialise(fingerprint="f", values=np.ones(2, np.float32), learning_rate=9.0, momentum=0.0)
    np.testing.assert_array_equal(again.values, [0.0, 0.0])  # the first worker's values stay
    with pytest.raises(ShardError, match="layout"):
        shard.initialise(fingerprint="g", values=np.ones(2, np.float32), learning_rate=1.0, momentum=0.0)
    with pytest.raises(ShardError, match="read version 1"):
        shard.apply(worker="a", read_version=1, gradient=np.zeros(2, np.float32))
    with pytest.raises(ShardError, match="3 values"):
        shard.apply(worker="a", read_version=0, gradient=np.zeros(3, np.float32))
    assert shard.version == 0


def test_max_staleness_drops_and_counts_updates_staler_than_the_bound() -> None:
    shard = ParameterShard(shard=0, max_staleness=2)
    shard.initialise(fingerprint="f", values=np.array([1.0], np.float32), learning_rate=1.0, momentum=0.0)
    for _ in range(3):
        shard.apply(worker="b", read_version=shard.version, gradient=np.ones(1, np.float32))
    at_two, _ = shard.apply(worker="a", read_version=1, gradient=np.ones(1, np.float32))
    assert (at_two.staleness, at_two.dropped) == (2, False)  # τ = bound: applied
    stale, snap = shard.apply(worker="a", read_version=0, gradient=np.full(1, 100.0, np.float32))
    assert (stale.staleness, stale.dropped, stale.version) == (4, True, 4)
    np.testing.assert_allclose(snap.values, [-3.0])  # unchanged by the dropped gradient
    assert shard.version == 4 and shard.dropped == 1
    assert [u.staleness for u in shard.updates_after(0)] == [0, 0, 0, 2]  # dropped updates are not logged
    with pytest.raises(ValueError, match="max_staleness"):
        ParameterShard(shard=0, max_staleness=-1)
