"""Failures: a worker failing (restart with backoff, then Failed), a permanent exit code, a clean exit."""

from __future__ import annotations

import pytest
from e2e_support import Kube, training_job, wait_for

pytestmark = pytest.mark.e2e
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


def _status(kube: Kube, name: str, namespace: str) -> dict:
    return (kube.get("tj", name, namespace) or {}).get("status") or {}


def test_retryable_failures_restart_with_backoff_then_fail(kube: Kube, namespace: str) -> None:
    # rank 1 is killed by SIGKILL (exit 137: retryable under ExitCode) a second after starting, every attempt
    crash = ["sh", "-c", 'if [ "$RANK" = 1 ]; then sleep 1; kill -9 $$; else sleep 600; fi']
    doc = training_job(
        "crashy",
        command=crash,
        replicas=(2, 2),
        runPolicy={"restartPolicy": "ExitCode", "backoffLimit": 2, "backoffSeconds": 1},
    )
    assert kube.apply(doc, namespace).returncode == 0

    def failed() -> dict | None:
        status = _status(kube, "crashy", namespace)
        return status if status.get("phase") == "Failed" else None

    status = wait_for("job Failed after retries", failed, timeout_s=120)
    assert status["restarts"] == 2
    failed_cond = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed_cond["reason"] == "BackoffLimitExceeded"
    assert "exited with code 137" in failed_cond["message"]
    reasons = [e["reason"] for e in kube.events(namespace, "crashy")]
    assert reasons.count("WorkerFailed") >= 2 and "Failed" in reasons
    # no worker left running
    wait_for(
        "running pods stopped",
        lambda: (
            not [
                p
                for p in kube.items("pods", namespace, "paceline.dev/job=crashy")
                if p["status"].get("phase") == "Running"
            ]
        ),
    )


def test_permanent_exit_code_fails_without_restart(kube: Kube, namespace: str) -> None:
    doc = training_job("buggy", command=["python", "-c", "raise SystemExit(3)"], replicas=(1, 1))
    assert kube.apply(doc, namespace).returncode == 0
    status = wait_for(
        "Failed", lambda: (s := _status(kube, "buggy", namespace)).get("phase") == "Failed" and s
    )
    cond = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "PermanentFailure" and "code 3" in cond["message"]
    assert status.get("restarts", 0) == 0


def test_successful_job_succeeds(kube: Kube, namespace: str) -> None:
    doc = training_job("quick", command=["python", "-c", "print('trained')"], replicas=(2, 2))
    assert kube.apply(doc, namespace).returncode == 0
    wait_for("Succeeded", lambda: _status(kube, "quick", namespace).get("phase") == "Succeeded")
