"""Reinforcement mode: the learners' buffers (trajectory batches for PPO, replay ring for DQN)."""

from __future__ import annotations

import numpy as np
import pytest

from paceline_worker.reinforcement.buffers import ReplayBuffer, SegmentBuffer
from paceline_worker.reinforcement.lag import LagHistogram
from paceline_worker.reinforcement.segment import Segment, SegmentError, decode_segment, encode_segment


def segment(version: int, *, envs: int = 2, steps: int = 4, actor: int = 0, fill: float = 0.0) -> Segment:
    shape = (envs, steps)
    return Segment(
        actor=actor,
        version=version,
        obs=np.full((*shape, 3), fill, np.float32),
        actions=np.zeros(shape, np.int64),
        rewards=np.ones(shape, np.float32),
        next_obs=np.full((*shape, 3), fill + 1, np.float32),
        terminated=np.zeros(shape, bool),
        truncated=np.zeros(shape, bool),
        logp=np.full(shape, -0.5, np.float32),
        episode_returns=np.array([12.0], np.float32),
    )


def test_drop_stale_removes_batches_beyond_the_bound_and_counts_their_samples() -> None:
    buffer = SegmentBuffer(max_lag=1, capacity_samples=1000)
    for version in (3, 4, 5):
        buffer.add(segment(version))
    lags = LagHistogram()
    assert buffer.drop_stale(5, lags) == 8  # version 3 is 2 behind
    assert lags.dropped == 8
    assert buffer.samples == 16


def test_newest_takes_the_freshest_usable_batches_up_to_the_limit() -> None:
    buffer = SegmentBuffer(max_lag=2, capacity_samples=1000)
    for version in (1, 2, 3, 4):
        buffer.add(segment(version))
    chosen = buffer.newest(4, limit_samples=16)
    assert [s.version for s in chosen] == [4, 3]
    assert [s.version for s in buffer.newest(4, limit_samples=1)] == [4]  # at least one batch
    assert buffer.newest(9, limit_samples=16) == []  # everything is stale


def test_strict_round_takes_only_batches_of_the_current_version_and_removes_them() -> None:
    buffer = SegmentBuffer(max_lag=0, capacity_samples=1000)
    buffer.add(segment(2, actor=0))
    buffer.add(segment(3, actor=0))
    buffer.add(segment(3, actor=1))
    assert buffer.fresh_samples(3) == 16
    assert buffer.fresh_actors(3) == {0, 1} and buffer.fresh_actors(2) == {0}
    taken = buffer.take_fresh(3)
    assert sorted(s.actor for s in taken) == [0, 1]
    assert buffer.fresh_samples(3) == 0 and buffer.samples == 8


def test_capacity_evicts_the_oldest_batches() -> None:
    buffer = SegmentBuffer(max_lag=10, capacity_samples=16)
    assert buffer.add(segment(1)) == 0
    assert buffer.add(segment(2)) == 0
    assert buffer.add(segment(3)) == 8
    assert [s.version for s in buffer.newest(3, limit_samples=100)] == [3, 2]


def test_replay_ring_overwrites_the_oldest_rows_and_samples_only_within_the_lag_bound() -> None:
    replay = ReplayBuffer(capacity=20, obs_dim=3)
    replay.add(segment(1, fill=1.0))  # 8 rows
    replay.add(segment(2, fill=2.0))
    replay.add(segment(9, fill=9.0))  # wraps: 24 rows into 20
    assert replay.size == 20
    assert set(replay.versions.tolist()) == {1, 2, 9}
    assert (replay.versions == 1).sum() == 4
    rows, lags, dropped = replay.sample(np.random.default_rng(0), 400, learner_version=9, max_lag=7)
    assert set(replay.versions[rows].tolist()) == {2, 9}
    assert set(lags.tolist()) == {0, 7}
    assert dropped + len(rows) == 400 and dropped > 0
    assert np.all(replay.next_obs[rows] == replay.obs[rows] + 1)


def test_segment_round_trips_through_its_wire_form() -> None:
    original = segment(6, actor=3, fill=0.25)
    decoded = decode_segment(encode_segment(original))
    assert (decoded.actor, decoded.version, decoded.samples) == (3, 6, 8)
    np.testing.assert_array_equal(decoded.next_obs, original.next_obs)
    np.testing.assert_array_equal(decoded.episode_returns, [12.0])


def test_a_malformed_batch_is_rejected() -> None:
    with pytest.raises(SegmentError):
        decode_segment(b"not npz")
    bad = segment(1)
    object.__setattr__(bad, "logp", np.zeros((1, 1), np.float32))
    with pytest.raises(SegmentError, match="logp"):
        decode_segment(encode_segment(bad))
