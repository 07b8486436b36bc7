"""Global sampler arithmetic: shares, offsets, the last partial batch, and exact per-epoch coverage."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paceline_worker.sampler import GlobalSampler, Slice, plan_step, proportional_split


def test_full_step_slices_are_contiguous_at_prefix_offsets() -> None:
    assert plan_step(num_samples=100, cursor=10, batch_sizes=[3, 0, 5]) == [
        Slice(start=10, count=3),
        Slice(start=13, count=0),
        Slice(start=13, count=5),
    ]


def test_last_partial_batch_is_split_in_proportion_with_largest_remainder() -> None:
    # 2 samples left, shares 2:5:3 -> exact 0.4, 1.0, 0.6 -> [0, 1, 1]
    assert [s.count for s in plan_step(num_samples=22, cursor=20, batch_sizes=[2, 5, 3])] == [0, 1, 1]
    assert proportional_split(3, [1, 1, 1, 1]) == [1, 1, 1, 0], "ties go to the lower rank"


@given(total=st.integers(0, 500), shares=st.lists(st.integers(0, 50), min_size=1, max_size=8))
def test_proportional_split_sums_and_stays_within_one_of_exact(total: int, shares: list[int]) -> None:
    if sum(shares) == 0:
        with pytest.raises(ValueError):
            proportional_split(total, shares)
        return
    counts = proportional_split(total, shares)
    assert sum(counts) == total
    for count, share in zip(counts, shares, strict=True):
        assert abs(count - total * share / sum(shares)) < 1
        assert share > 0 or count == 0


@settings(max_examples=60, deadline=None)
@given(
    num_samples=st.integers(1, 60),
    schedule=st.lists(
        st.tuples(st.integers(1, 9), st.lists(st.integers(0, 7), min_size=3, max_size=3).filter(any)),
        min_size=1,
        max_size=6,
    ),
)
def test_every_sample_exactly_once_per_epoch_whatever_the_share_changes(
    num_samples: int, schedule: list[tuple[int, list[int]]]
) -> None:
    """Each schedule entry: run that many steps with those batch sizes (world size 3), then change."""
    ranks = [GlobalSampler(num_samples, seed=7) for _ in range(3)]
    seen: dict[int, Counter[int]] = {}
    for steps, batch_sizes in schedule:
        for _ in range(steps):
            for rank, sampler in enumerate(ranks):
                taken = sampler.next_step(batch_sizes, rank)
                seen.setdefault(taken.epoch, Counter()).update(taken.indices)
    assert len({(s.state.epoch, s.state.cursor) for s in ranks}) == 1, "ranks agree without communicating"
    finished_epochs = ranks[0].state.epoch
    for epoch in range(finished_epochs):
        assert seen[epoch] == Counter(range(num_samples))
    if ranks[0].state.cursor:
        current = seen[finished_epochs]
        assert sum(current.values()) == ranks[0].state.cursor and max(current.values()) == 1


def test_epochs_are_reshuffled_deterministically_and_state_round_trips() -> None:
    a, b = GlobalSampler(50, seed=3), GlobalSampler(50, seed=3)
    assert a.permutation(0) == b.permutation(0) != a.permutation(1)
    for _ in range(4):
        a.next_step([5, 6], 0)
    b.load_state_dict(a.state_dict())
    assert b.next_step([5, 6], 1) == a.next_step([5, 6], 1)
    with pytest.raises(ValueError, match="samples"):
        GlobalSampler(49).load_state_dict(a.state_dict())


def test_unshuffled_sampler_reads_in_order() -> None:
    sampler = GlobalSampler(5, shuffle=False)
    assert sampler.next_step([2, 1], 1).indices == [2]
    last = sampler.next_step([2, 1], 0)
    assert (last.indices, last.global_batch_size, sampler.state.epoch) == ([3], 2, 1)
