"""Versioned batch-share assignment: validation, JSON form and the fixed-size control vector.

Pure logic only; no torch, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_KNOWN_KEYS = frozenset({"version", "batchSizes", "learningRate", "momentum"})


class AssignmentError(ValueError):
    """An assignment that cannot be used; the message says what to fix."""


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """Per-rank batch sizes plus optional optimiser hyper-parameters, identified by a version."""

    version: int
    batch_sizes: tuple[int, ...]
    learning_rate: float | None = None
    momentum: float | None = None

    @property
    def global_batch_size(self) -> int:
        return sum(self.batch_sizes)

    @property
    def world_size(self) -> int:
        return len(self.batch_sizes)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "batchSizes": list(self.batch_sizes),
            "learningRate": self.learning_rate,
            "momentum": self.momentum,
        }


def _require_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AssignmentError(f"{what} must be an integer, got {value!r}")
    return value


def _optional_float(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AssignmentError(f"{what} must be a number or null, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise AssignmentError(f"{what} must be finite, got {value!r}")
    return result


def assignment_from_mapping(data: Mapping[str, Any], *, world_size: int) -> Assignment:
    """Validate a decoded JSON object against the world size; raises AssignmentError."""
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise AssignmentError(f"unknown field(s) {unknown}; allowed: {sorted(_KNOWN_KEYS)}")
    if "version" not in data or "batchSizes" not in data:
        raise AssignmentError("an assignment needs 'version' and 'batchSizes'")
    version = _require_int(data["version"], "version")
    if version < 0:
        raise AssignmentError(f"version must be >= 0, got {version}")
    raw_sizes = data["batchSizes"]
    if not isinstance(raw_sizes, list):
        raise AssignmentError(f"batchSizes must be a list of integers, got {raw_sizes!r}")
    if len(raw_sizes) != world_size:
        raise AssignmentError(
            f"batchSizes has {len(raw_sizes)} entries but the job has {world_size} ranks (WORLD_SIZE)"
        )
    sizes = tuple(_require_int(b, f"batchSizes[{i}]") for i, b in enumerate(raw_sizes))
    negative = [i for i, b in enumerate(sizes) if b < 0]
    if negative:
        raise AssignmentError(f"batchSizes must be >= 0; negative at rank(s) {negative}")
    if sum(sizes) <= 0:
        raise AssignmentError("batchSizes must sum to a positive global batch size")
    learning_rate = _optional_float(data.get("learningRate"), "learningRate")
    if learning_rate is not None and learning_rate <= 0:
        raise AssignmentError(f"learningRate must be > 0, got {learning_rate}")
    momentum = _optional_float(data.get("momentum"), "momentum")
    if momentum is not None and not -1.0 < momentum < 1.0:
        raise AssignmentError(f"momentum must lie in (-1, 1), got {momentum}")
    return Assignment(version=version, batch_sizes=sizes, learning_rate=learning_rate, momentum=momentum)


def parse_assignment(text: str | bytes, *, world_size: int) -> Assignment:
    """Parse and validate assignment JSON; raises AssignmentError with a readable message."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AssignmentError(f"assignment is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AssignmentError("assignment must be a JSON object")
    return assignment_from_mapping(data, world_size=world_size)


# Control vector: one float64 tensor summed over all ranks at every step boundary.
# Rank 0 writes the assignment; every rank may set its stop flag; other fields are zero elsewhere,
# so the sum reproduces rank 0's values exactly (adding 0.0 is exact) and counts the stop requests.
_STOP, _VERSION, _HAS_LR, _LR, _HAS_MOMENTUM, _MOMENTUM = range(6)
CONTROL_HEADER_LENGTH = 6


def control_vector_length(world_size: int) -> int:
    return CONTROL_HEADER_LENGTH + world_size


def encode_control(assignment: Assignment | None, *, stop: bool, world_size: int) -> list[float]:
    """Rank 0 passes the assignment to use for the next step; other ranks pass None."""
    values = [0.0] * control_vector_length(world_size)
    values[_STOP] = 1.0 if stop else 0.0
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
    return ControlMessage(stop_requested=values[_STOP] > 0.5, assignment=assignment)
