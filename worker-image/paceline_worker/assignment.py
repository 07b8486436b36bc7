"""The fixed-size control vector that carries rank 0's assignment to every rank at a step boundary.

The assignment itself (fields, JSON form, validation) is the wire contract in `paceline_worker.wire`.
Pure logic only; no torch, no I/O.
"""

from __future__ import annotations

import struct
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
_SUMMED = frozenset({_STOP, _VOTERS, _VOTE, _VOTE_SQUARED})  # all ranks add to these; rank 0 alone to others

# Float32 lanes: the control vector can ride in a float32 (or float64) gradient all-reduce. Each field is four
# lanes of small integers, exact in float32: a field only rank 0 writes is its float64 bit pattern in 16-bit
# chunks (the other ranks add zeros); a field many ranks add to is a non-negative integer in 12-bit digits,
# whose sums stay exact in float32 for up to 4096 ranks.
_LANES = 4
_CHUNK_BITS, _DIGIT_BITS = 16, 12
MAX_LANE_RANKS = 1 << _DIGIT_BITS


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


def control_lane_count(world_size: int) -> int:
    return _LANES * control_vector_length(world_size)


def _digits(number: int, bits: int) -> list[float]:
    return [float((number >> (bits * d)) & ((1 << bits) - 1)) for d in range(_LANES)]


def _number(digits: Sequence[float], bits: int) -> int:
    return sum(round(d) << (bits * i) for i, d in enumerate(digits))


def to_lanes(values: Sequence[float]) -> list[float]:
    """One rank's control vector as float32-exact lanes (see above): `from_lanes` of the lanes summed over
    ranks equals the summed control vectors."""
    lanes: list[float] = []
    for index, value in enumerate(values):
        if index in _SUMMED:
            number = round(value)
            if number != value or not 0 <= number < 1 << (_DIGIT_BITS * _LANES):
                raise AssignmentError(f"control field {index} must be a non-negative integer, got {value}")
            lanes.extend(_digits(number, _DIGIT_BITS))
        else:
            lanes.extend(_digits(struct.unpack("<Q", struct.pack("<d", value))[0], _CHUNK_BITS))
    return lanes


def from_lanes(lanes: Sequence[float], *, world_size: int) -> list[float]:
    """The summed control vector from the summed lanes."""
    if len(lanes) != control_lane_count(world_size):
        raise AssignmentError("control lanes do not match the world size")
    values: list[float] = []
    for index in range(control_vector_length(world_size)):
        field = lanes[_LANES * index : _LANES * (index + 1)]
        if index in _SUMMED:
            values.append(float(_number(field, _DIGIT_BITS)))
        else:
            values.append(struct.unpack("<d", struct.pack("<Q", _number(field, _CHUNK_BITS)))[0])
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
