"""Thread-safe current/pending assignment, shared by the HTTP thread and the training loop."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .wire import Assignment, AssignmentError, parse_assignment

HISTORY_LIMIT = 100


class OfferOutcome(Enum):
    ACCEPTED = "accepted"
    STALE = "stale"  # version not higher than the newest known one
    INVALID = "invalid"  # bad JSON, wrong length, bad values
    NOT_RANK_ZERO = "not-rank-zero"


@dataclass(frozen=True, kw_only=True)
class OfferResult:
    outcome: OfferOutcome
    message: str
    assignment: Assignment | None = None


@dataclass(frozen=True, kw_only=True)
class AppliedVersion:
    """When a version took effect: the first step that used it, and wall-clock times."""

    version: int
    step: int
    applied_at: float
    received_at: float | None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "step": self.step,
            "appliedAt": self.applied_at,
            "receivedAt": self.received_at,
        }


class AssignmentStore:
    """Current assignment, at most one pending one (rank 0 only), and the history of switches."""

    def __init__(
        self,
        initial: Assignment,
        *,
        rank: int,
        fixed_global_batch: bool = True,
        extra_validation: Callable[[Assignment], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._rank = rank
        self._current = initial
        self._pending: Assignment | None = None
        self._pending_received_at: float | None = None
        self._received_at: dict[int, float] = {}
        self._fixed_global_batch = fixed_global_batch
        self._extra_validation = extra_validation
        self._history: deque[AppliedVersion] = deque(maxlen=HISTORY_LIMIT)

    @property
    def current(self) -> Assignment:
        with self._lock:
            return self._current

    @property
    def pending(self) -> Assignment | None:
        with self._lock:
            return self._pending

    def offer(self, body: bytes | str) -> OfferResult:
        """Handle a PUT body: validate and make it pending if its version is the newest.

        `extra_validation` (e.g. "the optimiser has a momentum to set") raises AssignmentError to reject.
        """
        if self._rank != 0:
            return OfferResult(
                outcome=OfferOutcome.NOT_RANK_ZERO,
                message=f"this is rank {self._rank}; send assignments to rank 0 (the MASTER_ADDR pod)",
            )
        with self._lock:
            world_size = self._current.world_size
            global_batch = self._current.global_batch_size
        try:
            candidate = parse_assignment(body, world_size=world_size)
            if self._fixed_global_batch and candidate.global_batch_size != global_batch:
                raise AssignmentError(
                    f"batchSizes sum to {candidate.global_batch_size} but the global batch size "
                    f"is fixed at {global_batch}"
                )
            if self._extra_validation is not None:
                self._extra_validation(candidate)
        except AssignmentError as exc:
            return OfferResult(outcome=OfferOutcome.INVALID, message=str(exc))
        with self._lock:
            newest = self._pending.version if self._pending is not None else self._current.version
            if candidate.version <= newest:
                return OfferResult(
                    outcome=OfferOutcome.STALE,
                    message=f"version {candidate.version} is not newer than version {newest}",
                )
            self._pending = candidate
            self._received_at[candidate.version] = time.time()
        return OfferResult(outcome=OfferOutcome.ACCEPTED, message="pending", assignment=candidate)

    def take_for_next_step(self) -> Assignment:
        """The assignment rank 0 announces for the next step: the pending one if any, else the current."""
        with self._lock:
            return self._pending if self._pending is not None else self._current

    def apply(self, assignment: Assignment, *, step: int) -> AppliedVersion | None:
        """Make `assignment` current (all ranks, same step); returns the switch record, None if unchanged."""
        with self._lock:
            if assignment == self._current:
                return None
            if self._pending is not None and self._pending.version <= assignment.version:
                self._pending = None
            self._current = assignment
            record = AppliedVersion(
                version=assignment.version,
                step=step,
                applied_at=time.time(),
                received_at=self._received_at.pop(assignment.version, None),
            )
            self._history.append(record)
            return record

    def restore(self, current: Assignment, pending: Assignment | None) -> None:
        """Replace the state after loading a checkpoint."""
        with self._lock:
            self._current = current
            self._pending = pending if pending is not None and pending.version > current.version else None

    def reset(self, current: Assignment, *, rank: int) -> None:
        """Start over as `rank` of a new group (a regroup): its assignment, nothing pending."""
        with self._lock:
            self._rank = rank
            self._current = current
            self._pending = None
            self._pending_received_at = None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rank": self._rank,
                "current": self._current.to_json_dict(),
                "pending": None if self._pending is None else self._pending.to_json_dict(),
                "applied": [record.to_json_dict() for record in self._history],
            }

    @property
    def history(self) -> list[AppliedVersion]:
        with self._lock:
            return list(self._history)
