"""Stage 1 — validate: is the spec runnable, is the job finished, were its pods refused by the API server?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paceline import api
from paceline.conditions import find
from paceline.controller.decide.model import Observed
from paceline.reasons import ConditionType, Reason


@dataclass(frozen=True, kw_only=True)
class Valid:
    spec: api.JobSpec


@dataclass(frozen=True, kw_only=True)
class Invalid:
    """The spec cannot run; running workers are left alone until it is fixed."""

    message: str


@dataclass(frozen=True, kw_only=True)
class Refused:
    """The API server refused a pod built from this generation's template."""

    message: str


@dataclass(frozen=True, kw_only=True)
class Finished:
    """Succeeded, or Failed for good: nothing more to do but stop what still runs after a failure."""

    failed: bool


Checked = Valid | Invalid | Refused | Finished


def phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def generation(job: Mapping[str, Any]) -> int:
    return int(job["metadata"].get("generation") or 0)


def terminal(status: Mapping[str, Any], generation: int) -> bool:
    """Succeeded, or Failed for good (an invalid spec or pod template is retried once the spec changes)."""
    conds = status.get("conditions") or []
    failed = find(conds, ConditionType.FAILED)
    succeeded = find(conds, ConditionType.SUCCEEDED)
    if succeeded is not None and succeeded.get("status") == "True":
        return True
    if failed is None or failed.get("status") != "True" or failed.get("reason") == Reason.INVALID_SPEC:
        return False
    if failed.get("reason") == Reason.INVALID_POD_TEMPLATE:
        return failed.get("observedGeneration") == generation
    return True


def validate(obs: Observed) -> Checked:
    """Stage 1: everything later reads the typed settings, never the raw spec."""
    status = obs.job.get("status") or {}
    current = generation(obs.job)
    spec = obs.spec
    if isinstance(spec, api.InvalidSpec):
        running = sum(1 for p in obs.pods if phase(p) == "Running")
        note = f" ({running} running worker(s) left untouched)" if running else ""
        return Invalid(message=f"{spec}{note}")
    if terminal(status, current):
        failed = (find(status.get("conditions") or [], ConditionType.FAILED) or {}).get("status") == "True"
        return Finished(failed=failed)
    if obs.rejected is not None and obs.rejected.generation == current:
        return Refused(
            message=f"the API server rejected worker pod {obs.rejected.pod} built from spec.template: "
            f"{obs.rejected.message}; fix spec.template"
        )
    return Valid(spec=spec)
