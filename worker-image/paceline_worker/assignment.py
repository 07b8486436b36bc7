"""The fixed-size control vector that carries rank 0's assignment to every rank at a step boundary.

The assignment itself (fields, JSON form, validation) is the wire contract in `paceline_worker.wire`.
Pure logic only; no torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .wire import Assignment, AssignmentError

# Control vector: one float64 tensor summed over all ranks at every step boundary.
# Rank 0 writes the assignment; every rank may set its stop flag; other fields are zero elsewhere,
# so the sum reproduces rank 0's values exactly (adding 0.0 is exact) and counts the stop requests.
# A rank whose next generation's rendezvous is complete votes for it: the sums of 1, g and g² over the voters
# tell whether they all name the same generation (Σg² · n = (Σg)² exactly when every g is equal).
_STOP, _VERSION, _HAS_LR, _LR, _HAS_MOMENTUM, _MOMENTUM, _VOTERS, _VOTE, _VOTE_SQUARED = range(9)
CONTROL_HEADER_LENGTH = 9


def control_vector_length(world_size: int) -> int:
    return CONTROL_HEADER_LENGTH + world_size


def encode_control(
    assignment: Assignment | None, *, stop: bool, world_size: int, ready_generation: int | None = None
) -> list[float]:
    """Rank 0 passes the assignment to use for the next step; other ranks pass None. `ready_generation`:
    the generation this rank can switch to now (its rendezvous is complete)."""
    values = [0.0] * control_vector_length(world_size)
    values[_STOP] = 1.0 if stop else 0.0
    if ready_generation is not None:
        values[_VOTERS], values[_VOTE] = 1.0, float(ready_generation)
        values[_VOTE_SQUARED] = float(ready_generation) ** 2
    if assignment is not None:
        if assignment.world_size != world_size:
            raise AssignmentError("assignment length does not match the world size")
        values[_VERSION] = float(assignment.version)
        if assignment.learning_rate is not None:
            values[_HAS_LR], values[_LR] = 1.0, assignment.learning_rate
        if assignment.momentum is not None:
            values[_HAS_MOMENTUM], values[_MOMENTUM] = 1.0, assignment.momentum
        values[CONTROL_HEADER_LENGTH:] = [float(b) for b in assignment.batch_sizes]
    return values


@dataclass(frozen=True, kw_only=True)
class ControlMessage:
    stop_requested: bool
    assignment: Assignment
    regroup_generation: int | None = None  # every voter named this generation: all ranks switch to it now


def decode_control(values: Sequence[float]) -> ControlMessage:
    """Inverse of the summed encode_control vectors."""
    if len(values) <= CONTROL_HEADER_LENGTH:
        raise AssignmentError("control vector too short")
    assignment = Assignment(
        version=round(values[_VERSION]),
        batch_sizes=tuple(round(v) for v in values[CONTROL_HEADER_LENGTH:]),
        learning_rate=values[_LR] if values[_HAS_LR] > 0.5 else None,
        momentum=values[_MOMENTUM] if values[_HAS_MOMENTUM] > 0.5 else None,
    )
    voters, vote, squared = values[_VOTERS], values[_VOTE], values[_VOTE_SQUARED]
    unanimous = voters > 0.5 and squared * voters == vote * vote
    return ControlMessage(
        stop_requested=values[_STOP] > 0.5,
        assignment=assignment,
        regroup_generation=round(vote / voters) if unanimous else None,
    )
