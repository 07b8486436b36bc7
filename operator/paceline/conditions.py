"""status.conditions per the Kubernetes API conventions (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from paceline.reasons import ConditionType


@dataclass(frozen=True, kw_only=True)
class Condition:
    """One observation; lastTransitionTime changes only when status changes."""

    type: ConditionType
    status: bool | None  # None = Unknown
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        """True / False / Unknown."""
        return "Unknown" if self.status is None else str(self.status)


def merge_conditions(
    old: Iterable[Mapping[str, Any]], new: Iterable[Condition], *, now: str, generation: int
) -> list[dict[str, Any]]:
    """New condition list: keep lastTransitionTime of conditions whose status did not change."""
    previous = {c.get("type"): c for c in old}
    merged: list[dict[str, Any]] = []
    for cond in new:
        before = previous.get(str(cond.type))
        unchanged = before is not None and before.get("status") == cond.status_text
        merged.append(
            {
                "type": str(cond.type),
                "status": cond.status_text,
                "reason": cond.reason,
                "message": cond.message,
                "observedGeneration": generation,
                "lastTransitionTime": before.get("lastTransitionTime", now) if unchanged and before else now,
            }
        )
    return merged


def find(conditions: Iterable[Mapping[str, Any]], ctype: ConditionType) -> Mapping[str, Any] | None:
    """The condition of a type, if present."""
    return next((c for c in conditions if c.get("type") == str(ctype)), None)


def is_true(conditions: Iterable[Mapping[str, Any]], ctype: ConditionType) -> bool:
    """True when the condition exists with status True."""
    cond = find(conditions, ctype)
    return cond is not None and cond.get("status") == "True"
