"""Stage 4 — failures and backoff: what a failed pod of this attempt means under spec.runPolicy (Kubeflow's
exit-code semantics), and whether a restart is still waiting out its backoff."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paceline import api
from paceline.controller.decide.children import Children
from paceline.controller.decide.validate import phase
from paceline.reasons import Reason
from paceline_worker.wire import EXIT_TEMPORARY_FAILURE

MAX_BACKOFF_S = 300


@dataclass(frozen=True, kw_only=True)
class Failure:
    """The job fails for good."""

    reason: Reason
    message: str


@dataclass(frozen=True, kw_only=True)
class Restart:
    """Every pod of the attempt is re-created after `delay_s`."""

    delay_s: int
    message: str


def exit_info(pod: Mapping[str, Any]) -> tuple[int | None, str, str]:
    """(exit code, finishedAt, reason) of the first terminated container of a failed pod; the reason carries
    the container's termination message when it wrote one (e.g. a plan that does not match the model)."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            why = str(term.get("reason") or "Error")
            said = str(term.get("message") or "").strip()
            return term.get("exitCode"), str(term.get("finishedAt") or ""), f"{why}: {said}" if said else why
    return None, "", str(status.get("reason") or "Failed")


def retryable(policy: api.RestartPolicy, exit_code: int | None) -> bool:
    """Exit-code semantics: ExitCode retries 128+ (signals: OOM kill, preemption), unknown codes and the
    worker runtime's own temporary failure (75, e.g. its parameter server did not come back) only."""
    if policy is api.RestartPolicy.NEVER:
        return False
    if policy is api.RestartPolicy.ON_FAILURE:
        return True
    return exit_code is None or exit_code >= 128 or exit_code < 0 or exit_code == EXIT_TEMPORARY_FAILURE


def judge(children: Children, spec: api.JobSpec, *, world: int, restarts: int) -> Failure | Restart | None:
    """Stage 4a: the first failure of the attempt decides (a killed rank's peers exit 1 moments later)."""
    workers = children.workers
    done = len(workers) == world and all(phase(p) == "Succeeded" for p in workers.values())
    failed = [p for p in workers.values() if phase(p) == "Failed"]
    if not done:  # a parameter server failing stops the workers' progress too
        failed += [p for p in children.servers.values() if phase(p) == "Failed"]
    if not failed:
        return None
    first = min(failed, key=lambda p: exit_info(p)[1] or "~")
    code, _, why = exit_info(first)
    rank = (first["metadata"].get("labels") or {}).get(api.LABEL_RANK)
    where = f"rank {rank} (pod {first['metadata']['name']} on {(first.get('spec') or {}).get('nodeName')})"
    detail = f"{where} exited with code {code} ({why})" if code is not None else f"{where} failed ({why})"
    policy = spec.run_policy
    if "InvalidModel: " in why:  # the worker found the plan does not fit the model: no restart can help
        fix = "fix spec.model (regenerate the graph with `paceline graph` from the model the job runs)"
        return Failure(reason=Reason.INVALID_MODEL, message=f"{detail}; {fix}")
    if not retryable(policy.restart_policy, code):
        rule = (
            "restartPolicy Never"
            if policy.restart_policy is api.RestartPolicy.NEVER
            else "restartPolicy ExitCode treats codes 1–127 as permanent: fix the training script"
        )
        return Failure(reason=Reason.PERMANENT_FAILURE, message=f"{detail}; {rule}")
    if restarts >= policy.backoff_limit:
        limit = f"backoffLimit {policy.backoff_limit} reached after {restarts} restart(s)"
        return Failure(reason=Reason.BACKOFF_LIMIT_EXCEEDED, message=f"{detail}; {limit}")
    delay = min(MAX_BACKOFF_S, policy.backoff_seconds * (2**restarts))
    return Restart(
        delay_s=delay, message=f"{detail}; restart {restarts + 1} of {policy.backoff_limit} in {delay} s"
    )


def backoff_until(status: Mapping[str, Any], now: datetime) -> datetime | None:
    """Stage 4b: when a pending restart may re-create the pods, if that is still in the future."""
    pending = status.get("nextRestartTime")
    if not pending:
        return None
    due = datetime.fromisoformat(str(pending).replace("Z", "+00:00"))
    return due if now < due else None
