"""Stage 1 of the decision — validate: an invalid spec, a finished job, a refused pod template."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs import job, pod

from paceline import api
from paceline.controller.decide.model import Observed, Rejection
from paceline.controller.decide.validate import Finished, Invalid, Refused, Valid, validate

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def observed(tj: dict[str, Any], **kwargs: Any) -> Observed:
    return Observed(
        job=tj,
        spec=api.parsed(tj["spec"]),
        pods=kwargs.pop("pods", []),
        service=None,
        control=None,
        now=T0,
        **kwargs,
    )


def failed(reason: str, generation: int = 1) -> dict[str, Any]:
    condition = {"type": "Failed", "status": "True", "reason": reason, "observedGeneration": generation}
    return {"conditions": [condition]}


def test_a_valid_spec_carries_its_typed_settings() -> None:
    checked = validate(observed(job()))
    assert isinstance(checked, Valid) and checked.spec.replicas_max == 4


def test_an_invalid_spec_says_why_and_counts_the_workers_left_running() -> None:
    running = [pod("demo-worker-0", phase="Running"), pod("demo-worker-1", phase="Pending")]
    checked = validate(observed(job(replicas={"min": 5, "max": 2}), pods=running))
    assert isinstance(checked, Invalid)
    assert (
        "spec.replicas.min (5)" in checked.message
        and "(1 running worker(s) left untouched)" in checked.message
    )


def test_finished_jobs_stay_finished_but_an_invalid_spec_does_not() -> None:
    for reason, finished in (
        ("PermanentFailure", True),
        ("BackoffLimitExceeded", True),
        ("InvalidSpec", False),
    ):
        tj = job()
        tj["status"] = failed(reason)
        assert isinstance(validate(observed(tj)), Finished) is finished
    tj = job()
    tj["status"] = {"conditions": [{"type": "Succeeded", "status": "True", "reason": "AllWorkersSucceeded"}]}
    checked = validate(observed(tj))
    assert isinstance(checked, Finished) and not checked.failed


def test_a_refused_template_fails_its_generation_only() -> None:
    refusal = Rejection(generation=1, pod="demo-worker-0", message="spec.containers[0].image: Required value")
    checked = validate(observed(job(), rejected=refusal))
    assert (
        isinstance(checked, Refused)
        and "demo-worker-0" in checked.message
        and "fix spec.template" in checked.message
    )
    tj = job()
    tj["status"] = failed("InvalidPodTemplate", generation=1)
    assert isinstance(validate(observed(tj, rejected=refusal)), Finished)
    tj["metadata"]["generation"] = 2  # the user changed the spec: try again
    assert isinstance(validate(observed(tj, rejected=refusal)), Valid)
