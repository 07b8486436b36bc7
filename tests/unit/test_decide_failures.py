"""Stage 4 of the decision — failures and backoff under Kubeflow's exit-code semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobs import PLAN, job, pod

from paceline import api
from paceline.controller.decide.children import classify
from paceline.controller.decide.failures import Failure, Restart, backoff_until, exit_info, judge
from paceline.controller.decide.members import first_members
from paceline.controller.decide.plan import Planned
from paceline_worker.wire import Assignment

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def failed(name: str, rank: int, code: int, at: int, message: str = "") -> dict[str, Any]:
    term = {
        "exitCode": code,
        "reason": "Error",
        "finishedAt": f"2026-11-23T12:00:{at:02d}Z",
        "message": message,
    }
    return pod(
        name, rank=rank, node="gpu-t4-0", phase="Failed", containerStatuses=[{"state": {"terminated": term}}]
    )


def _planned(world: int) -> Planned:
    assignment = Assignment(version=1, batch_sizes=(1,) * world)
    return Planned(plan=PLAN, assignment=assignment, plan_hash="", members=first_members("demo", world))


def verdict(*pods: dict[str, Any], restarts: int = 0, **spec: Any) -> Failure | Restart | None:
    return judge(
        classify(list(pods), attempt=0, planned=_planned(2)),
        api.parse_spec(job(**spec)["spec"]),
        world=2,
        restarts=restarts,
    )


def test_the_first_failure_decides_a_killed_rank_is_retried_with_doubling_backoff() -> None:
    first, peer = failed("demo-worker-1", 1, 137, at=5), failed("demo-worker-0", 0, 1, at=6)
    restart = verdict(peer, first, restarts=1)  # backoffSeconds 5, second restart: 10 s
    assert isinstance(restart, Restart) and restart.delay_s == 10
    assert "rank 1 (pod demo-worker-1 on gpu-t4-0) exited with code 137" in restart.message


def test_a_bug_fails_at_once_and_the_containers_message_is_kept() -> None:
    bug = verdict(failed("demo-worker-0", 0, 3, at=1, message="plan does not match the model"))
    assert isinstance(bug, Failure) and bug.reason == "PermanentFailure"
    assert (
        "code 3 (Error: plan does not match the model)" in bug.message
        and "fix the training script" in bug.message
    )


def test_the_backoff_limit_and_the_never_policy_fail_the_job() -> None:
    spent = verdict(failed("demo-worker-0", 0, 137, at=1), restarts=2)  # backoffLimit 2
    assert isinstance(spent, Failure) and spent.reason == "BackoffLimitExceeded"
    never = verdict(failed("demo-worker-0", 0, 137, at=1), runPolicy={"restartPolicy": "Never"})
    assert isinstance(never, Failure) and "restartPolicy Never" in never.message


def test_no_failure_no_verdict_and_an_unknown_exit_is_retried() -> None:
    assert verdict(pod("demo-worker-0", phase="Running")) is None
    lost = pod("demo-worker-0", phase="Failed", reason="Evicted")
    assert exit_info(lost) == (None, "", "Evicted")
    assert isinstance(verdict(lost), Restart)


def test_backoff_waits_until_the_restart_time() -> None:
    status = {"nextRestartTime": "2026-11-23T12:00:10Z"}
    assert backoff_until(status, T0) == T0 + timedelta(seconds=10)
    assert backoff_until(status, T0 + timedelta(seconds=11)) is None
    assert backoff_until({}, T0) is None


def test_a_plan_that_does_not_fit_the_model_fails_as_invalid_model_even_under_on_failure() -> None:
    said = "InvalidModel: the plan splits module 'encoder.fc1' (layer 'fc1') but the model has no such module"
    bad = verdict(failed("demo-worker-0", 0, 1, at=1, message=said), runPolicy={"restartPolicy": "OnFailure"})
    assert isinstance(bad, Failure) and bad.reason == "InvalidModel"
    assert "'encoder.fc1'" in bad.message and "paceline graph" in bad.message


def test_the_runtimes_temporary_failure_is_retried_under_exit_code_semantics() -> None:
    lost = failed("demo-worker-0", 0, 75, at=1, message="PS shard 0 did not come back")
    restart = verdict(lost)
    assert isinstance(restart, Restart) and "exited with code 75" in restart.message
    never = verdict(lost, runPolicy={"restartPolicy": "Never", "backoffLimit": 2, "backoffSeconds": 5})
    assert isinstance(never, Failure) and never.reason == "PermanentFailure"
