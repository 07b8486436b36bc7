"""Assignment validation, the control vector, and the pending/current store behind PUT /assignment."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paceline_worker.assignment import (
    control_lane_count,
    decode_control,
    encode_control,
    from_lanes,
    to_lanes,
)
from paceline_worker.assignment_store import AssignmentStore, OfferOutcome
from paceline_worker.wire import Assignment, AssignmentError, parse_assignment


def _json(**fields: object) -> str:
    return json.dumps({"version": 2, "batchSizes": [3, 5], **fields})


def test_valid_assignment_parses_with_optional_hyperparameters() -> None:
    parsed = parse_assignment(_json(learningRate=0.1, momentum=-0.2), world_size=2)
    assert parsed == Assignment(version=2, batch_sizes=(3, 5), learning_rate=0.1, momentum=-0.2)
    assert parsed.global_batch_size == 8
    assert parse_assignment(parsed_json := json.dumps(parsed.to_json_dict()), world_size=2) == parsed, (
        parsed_json
    )
    assert parse_assignment(_json(learningRate=None), world_size=2).learning_rate is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[1]", "JSON object"),
        (json.dumps({"batchSizes": [1, 1]}), "needs 'version'"),
        (_json(batchSizes=[8]), "1 entries but the job has 2 worker pods"),
        (_json(batchSizes=[3, -1]), "negative at rank"),
        (_json(batchSizes=[0, 0]), "positive global batch"),
        (_json(batchSizes=[3, 2.5]), "batchSizes[1] must be an integer"),
        (_json(version=True), "version must be an integer"),
        (_json(learningRate=0), "learningRate must be > 0"),
        (_json(learningRate="0.1"), "learningRate must be a finite number"),
        (_json(momentum=1.0), "momentum must lie in (-1, 1)"),
        (_json(extra=1), "unknown field"),
    ],
)
def test_invalid_assignments_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(
        AssignmentError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        parse_assignment(text, world_size=2)


def test_control_vectors_sum_to_rank_zero_assignment_and_any_stop() -> None:
    assignment = Assignment(version=7, batch_sizes=(1, 0, 9), learning_rate=0.03, momentum=-0.25)
    rank0 = encode_control(assignment, stop=False, world_size=3)
    others = [encode_control(None, stop=stop, world_size=3) for stop in (False, True)]
    summed = [sum(values) for values in zip(rank0, *others, strict=True)]
    message = decode_control(summed)
    assert message.assignment == assignment and message.stop_requested
    quiet = decode_control([a + b for a, b in zip(rank0, others[0], strict=True)])
    assert not quiet.stop_requested
    without = decode_control(
        encode_control(Assignment(version=1, batch_sizes=(2, 2, 2)), stop=False, world_size=3)
    )
    assert without.assignment.learning_rate is None and without.assignment.momentum is None


@given(
    sizes=st.lists(st.integers(0, 1 << 20), min_size=1, max_size=8),
    version=st.integers(1, 1 << 40),
    learning_rate=st.none() | st.floats(1e-12, 1e6),
    momentum=st.none() | st.floats(-0.999999, 0.999999),
    stops=st.lists(st.booleans(), min_size=8, max_size=8),
    votes=st.lists(st.none() | st.integers(0, 1 << 23), min_size=8, max_size=8),
)
def test_control_lanes_summed_in_float32_decode_to_the_summed_vectors(
    sizes: list[int],
    version: int,
    learning_rate: float | None,
    momentum: float | None,
    stops: list[bool],
    votes: list[int | None],
) -> None:
    """What rides in a float32 gradient bucket: every rank's lanes summed in float32 (as the all-reduce
    does) give back exactly what summing the float64 control vectors gives."""
    world = len(sizes) if sum(sizes) else 0
    if not world:
        sizes, world = [1, *sizes[1:]], len(sizes)
    assignment = Assignment(
        version=version, batch_sizes=tuple(sizes), learning_rate=learning_rate, momentum=momentum
    )
    vectors = [
        encode_control(
            assignment if rank == 0 else None,
            stop=stops[rank],
            world_size=world,
            ready_generation=votes[rank],
        )
        for rank in range(world)
    ]
    lanes = np.zeros(control_lane_count(world), dtype=np.float32)
    for vector in vectors:
        lanes += np.asarray(to_lanes(vector), dtype=np.float32)
    exact = decode_control([sum(values) for values in zip(*vectors, strict=True)])
    assert decode_control(from_lanes(lanes.tolist(), world_size=world)) == exact
    assert exact.assignment == assignment


def test_store_accepts_only_newer_versions_and_applies_them_with_history() -> None:
    store = AssignmentStore(Assignment(version=1, batch_sizes=(4, 4)), rank=0)
    assert store.offer(_json(version=1)).outcome is OfferOutcome.STALE
    assert store.offer(_json(version=3)).outcome is OfferOutcome.ACCEPTED
    assert store.offer(_json(version=2)).outcome is OfferOutcome.STALE, "older than the pending version"
    assert store.offer(_json(version=4, batchSizes=[4, 5])).outcome is OfferOutcome.INVALID
    announced = store.take_for_next_step()
    assert announced.version == 3
    record = store.apply(announced, step=12)
    assert record is not None and (record.version, record.step) == (3, 12) and record.received_at is not None
    assert store.pending is None and store.current.version == 3
    assert store.apply(announced, step=13) is None, "re-announcing the current assignment is not a switch"
    assert [h.step for h in store.history] == [12]
    assert store.snapshot()["applied"][0]["version"] == 3


def test_store_on_other_ranks_refuses_updates() -> None:
    store = AssignmentStore(Assignment(version=1, batch_sizes=(4, 4)), rank=1)
    result = store.offer(_json(version=5))
    assert result.outcome is OfferOutcome.NOT_RANK_ZERO and "rank 0" in result.message


def test_store_can_allow_a_changing_global_batch_and_run_extra_checks() -> None:
    def no_momentum(candidate: Assignment) -> None:
        if candidate.momentum is not None:
            raise AssignmentError("optimizer has no momentum")

    store = AssignmentStore(
        Assignment(version=1, batch_sizes=(4, 4)),
        rank=0,
        fixed_global_batch=False,
        extra_validation=no_momentum,
    )
    assert store.offer(_json(batchSizes=[1, 2])).outcome is OfferOutcome.ACCEPTED
    rejected = store.offer(_json(version=3, momentum=0.5))
    assert rejected.outcome is OfferOutcome.INVALID and "no momentum" in rejected.message
