"""Mode Reinforcement: learner and actor pods instead of a plan (pure).

Learners are created once and kept; actors follow spec.reinforcement.actors.count live (a change creates or
deletes actors and never touches the learners). A failed or stopped actor is replaced at once (actors hold
no state); a failed learner is re-created and resumes from its checkpoint, up to runPolicy.backoffLimit
times. The job has Succeeded when learner 0 exits 0 with its stopping rule met (its termination message
says which rule and carries its final status).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paceline import api
from paceline.builders import build_rl_pod
from paceline.conditions import Condition
from paceline.controller.decide.children import deleting, service, token_secret
from paceline.controller.decide.model import Decision, Event, Observed
from paceline.controller.decide.plan import job_ref
from paceline.controller.decide.status import SPEC_VALID, conclude, iso
from paceline.controller.decide.validate import phase
from paceline.reasons import ConditionType, EventReason, Reason
from paceline_worker.rl_settings import RlSettings

Pod = Mapping[str, Any]
LEARNER, ACTOR = "learner", "actor"
REFRESH_S = 2.0  # a running job's status is refreshed from the learners this often
STOP_REASONS = {
    "TargetReturnReached": Reason.TARGET_RETURN_REACHED,
    "EnvStepBudgetSpent": Reason.ENV_STEP_BUDGET_SPENT,
}


@dataclass(frozen=True, kw_only=True)
class RlPods:
    learners: dict[int, Pod]  # by index, not being deleted
    actors: dict[int, Pod]
    names: frozenset[str]  # every pod name present (a deleting pod still holds its name)


def rl_pods(pods: Sequence[Pod]) -> RlPods:
    learners: dict[int, Pod] = {}
    actors: dict[int, Pod] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        role, rank = labels.get(api.LABEL_ROLE), str(labels.get(api.LABEL_RANK, ""))
        if deleting(pod) or not rank.isdigit():
            continue
        if role == LEARNER:
            learners[int(rank)] = pod
        elif role == ACTOR:
            actors[int(rank)] = pod
    return RlPods(learners=learners, actors=actors, names=frozenset(p["metadata"]["name"] for p in pods))


def termination(pod: Pod) -> tuple[str, dict[str, Any]]:
    """(reason, final status) from a learner's termination message "<Reason>: <status JSON>"."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        message = str(((status.get("state") or {}).get("terminated") or {}).get("message") or "")
        reason, _, payload = message.partition(": ")
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = {}
        return reason, doc if isinstance(doc, dict) else {}
    return "", {}


def finished(pods: RlPods) -> tuple[str, dict[str, Any]]:
    """The first learner (by index) that exited 0 with its stopping rule met: (reason, final status)."""
    for _, pod in sorted(pods.learners.items()):
        if phase(pod) == "Succeeded":
            reason, final = termination(pod)
            if reason in STOP_REASONS:
                return reason, final
    return "", {}


def combine(learners: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One learner-status document for the job: the learner with the best mean return (the stopping rule is
    per learner) with environment steps, rates and the policy-lag counts summed over all learners."""
    docs = [learners[i] for i in sorted(learners)]
    best = max(docs, key=lambda d: float("-inf") if d.get("meanReturn") is None else float(d["meanReturn"]))
    if len(docs) == 1:
        return dict(best)
    counts: dict[str, int] = {}
    for doc in docs:
        for lag, n in ((doc.get("policyLag") or {}).get("counts") or {}).items():
            counts[lag] = counts.get(lag, 0) + int(n)
    summed = {k: sum(float(d.get(k) or 0) for d in docs) for k in ("envStepsPerSecond", "updatesPerSecond")}
    lags = [d.get("policyLag") or {} for d in docs]
    samples = [sum(int(n) for n in (lag.get("counts") or {}).values()) for lag in lags]
    mean = sum(float(lag.get("mean") or 0) * n for lag, n in zip(lags, samples, strict=True)) / max(
        sum(samples), 1
    )
    policy_lag = {
        **(best.get("policyLag") or {}),
        "counts": counts,
        "mean": mean,
        "max": max(int(lag.get("max") or 0) for lag in lags),
        "droppedSamples": sum(int(lag.get("droppedSamples") or 0) for lag in lags),
    }
    return {
        **best,
        **summed,
        "envSteps": sum(int(d.get("envSteps") or 0) for d in docs),
        "episodes": sum(int(d.get("episodes") or 0) for d in docs),
        "policyLag": policy_lag,
    }


def _number(value: Any, digits: int = 2) -> str | None:
    return None if value is None else f"{float(value):.{digits}f}"


def progress(learner: Mapping[str, Any]) -> dict[str, Any]:
    """status.reinforcement's measured part, from a learner's /status (or its final status)."""
    lag = learner.get("policyLag") or {}
    fields: dict[str, Any] = {
        "meanReturn": _number(learner.get("meanReturn")),
        "bestReturn": _number(learner.get("bestReturn")),
        "lastReturn": _number(learner.get("lastReturn")),
        "episodes": learner.get("episodes"),
        "envSteps": learner.get("envSteps"),
        "envStepsPerSecond": _number(learner.get("envStepsPerSecond"), 1),
        "updatesPerSecond": _number(learner.get("updatesPerSecond"), 1),
        "policyVersion": learner.get("version"),
        "policyLag": {
            "mean": _number(lag.get("mean"), 3),
            "p50": lag.get("p50"),
            "p90": lag.get("p90"),
            "max": lag.get("max"),
            "droppedSamples": lag.get("droppedSamples"),
            "counts": dict(lag.get("counts") or {}),
        },
        "stopReason": learner.get("stopReason"),
    }
    fields["policyLag"] = {k: v for k, v in fields["policyLag"].items() if v is not None}
    return {k: v for k, v in fields.items() if v is not None}


def _ready(pods: Mapping[int, Pod], wanted: int) -> str:
    running = sum(1 for i, p in pods.items() if i < wanted and phase(p) == "Running")
    return f"{running}/{wanted}"


def decide_reinforcement(obs: Observed, spec: api.JobSpec) -> Decision:
    """Create, replace and scale the learners and actors; report progress; conclude on learner 0's exit."""
    assert spec.reinforcement is not None
    rl = spec.reinforcement.rl
    ref = job_ref(obs.job)
    old = dict(obs.job.get("status") or {})
    pods = rl_pods(obs.pods)
    decision = Decision(
        create=[*token_secret(obs.job, obs.token, obs.fresh_token), *service(obs.job, obs.service)],
        requeue_after=REFRESH_S,
    )
    section = dict(old.get("reinforcement") or {})
    restarts = {
        "learner": int(section.get("learnerRestarts") or 0),
        "actor": int(section.get("actorRestarts") or 0),
    }
    conds: list[Condition] = [SPEC_VALID]
    status = {k: v for k, v in old.items() if k not in ("conditions", "phase", "observedGeneration")}

    if obs.learners:
        section |= progress(combine(obs.learners))
    reason, final = finished(pods)
    if reason in STOP_REASONS:
        section |= progress(final)
        done = STOP_REASONS[reason]
        message = (
            f"mean return {section.get('meanReturn')} over the last {rl.return_episodes} episodes "
            f"after {section.get('envSteps')} environment steps ({reason})"
        )
        conds += [
            Condition(type=ConditionType.SUCCEEDED, status=True, reason=done, message=message),
            Condition(
                type=ConditionType.RUNNING, status=False, reason=Reason.WORKERS_STOPPED, message=message
            ),
        ]
        decision.delete_pods = sorted(
            p["metadata"]["name"]
            for p in [*pods.actors.values(), *pods.learners.values()]
            if phase(p) not in ("Succeeded", "Failed")
        )
        decision.requeue_after = None
        status["completionTime"] = iso(obs.now)
        _finish(obs, rl, decision, status, section, restarts, pods, conds)
        return decision

    failed_learners = []
    for index in range(rl.learners):
        pod = pods.learners.get(index)
        name = api.learner_pod_name(ref.name, index)
        if pod is None and name not in pods.names:
            decision.create.append(build_rl_pod(ref, spec=spec, role=LEARNER, index=index))
        elif pod is not None and phase(pod) in ("Failed", "Succeeded"):
            failed_learners.append(name)  # a learner that stopped before the stopping rule: resume it
    if failed_learners:
        restarts["learner"] += len(failed_learners)
        if restarts["learner"] > spec.run_policy.backoff_limit:
            message = (
                f"learner(s) {', '.join(failed_learners)} stopped {restarts['learner']} times, more than "
                f"runPolicy.backoffLimit ({spec.run_policy.backoff_limit})"
            )
            conds.append(
                Condition(
                    type=ConditionType.FAILED,
                    status=True,
                    reason=Reason.BACKOFF_LIMIT_EXCEEDED,
                    message=message,
                )
            )
            decision.delete_pods = sorted(
                p["metadata"]["name"] for p in [*pods.actors.values(), *pods.learners.values()]
            )
            decision.requeue_after = None
            status["completionTime"] = iso(obs.now)
            _finish(obs, rl, decision, status, section, restarts, pods, conds)
            return decision
        decision.delete_pods += failed_learners
        decision.events.append(
            Event(
                type="Warning",
                reason=EventReason.WORKER_FAILED,
                message=f"{', '.join(failed_learners)} stopped early; re-created (resumes from checkpoint)",
            )
        )

    replaced, removed = [], []
    for index, pod in sorted(pods.actors.items()):
        name = pod["metadata"]["name"]
        if index >= rl.actors:
            removed.append(name)  # spec.reinforcement.actors.count went down
        elif phase(pod) == "Failed":  # exit 0: the learner said the job is done (or SIGTERM)
            replaced.append(name)
    for index in range(rl.actors):
        name = api.actor_pod_name(ref.name, index)
        if index not in pods.actors and name not in pods.names:
            decision.create.append(build_rl_pod(ref, spec=spec, role=ACTOR, index=index))
    if replaced:
        restarts["actor"] += len(replaced)
        decision.events.append(
            Event(
                type="Warning",
                reason=EventReason.WORKER_FAILED,
                message=f"replacing stopped actor(s) {', '.join(replaced)}",
            )
        )
    if removed:
        decision.events.append(
            Event(
                type="Normal",
                reason=EventReason.ACTORS_SCALED,
                message=f"actors.count is {rl.actors}: removing {', '.join(removed)}",
            )
        )
    decision.delete_pods = sorted({*decision.delete_pods, *replaced, *removed})
    if decision.create and not old.get("startTime"):
        status["startTime"] = iso(obs.now)
    conds += _progress_conditions(pods, rl.learners, rl.actors)
    _finish(obs, rl, decision, status, section, restarts, pods, conds)
    return decision


def _progress_conditions(pods: RlPods, learners: int, actors: int) -> list[Condition]:
    wanted = [*(pods.learners.get(i) for i in range(learners)), *(pods.actors.get(i) for i in range(actors))]
    bound = sum(1 for p in wanted if p is not None and (p.get("spec") or {}).get("nodeName"))
    running_learners = sum(1 for i in range(learners) if phase(pods.learners.get(i) or {}) == "Running")
    running_actors = sum(1 for i in range(actors) if phase(pods.actors.get(i) or {}) == "Running")
    total = learners + actors
    placed = Condition(
        type=ConditionType.PLACED,
        status=bound == total,
        reason=Reason.PODS_SCHEDULED if bound == total else Reason.PODS_PENDING,
        message=f"{bound}/{total} learner and actor pods bound to nodes",
    )
    running = running_learners == learners and running_actors > 0
    message = f"{running_learners}/{learners} learners and {running_actors}/{actors} actors running"
    return [
        placed,
        Condition(
            type=ConditionType.RUNNING,
            status=running,
            reason=Reason.WORKERS_RUNNING if running else Reason.WORKERS_STARTING,
            message=message,
        ),
    ]


def _finish(
    obs: Observed,
    rl: RlSettings,
    decision: Decision,
    status: dict[str, Any],
    section: dict[str, Any],
    restarts: Mapping[str, int],
    pods: RlPods,
    conds: list[Condition],
) -> None:
    """status.reinforcement's configured part and counts, the conditions, the events."""
    section |= {
        "dependencies": rl.dependencies.value,
        "relaxedDependencies": rl.relaxed_dependencies(),
        "algorithm": rl.algorithm.value,
        "actors": _ready(pods.actors, rl.actors),
        "learners": _ready(pods.learners, rl.learners),
        "actorRestarts": restarts["actor"],
        "learnerRestarts": restarts["learner"],
    }
    status["reinforcement"] = section
    status["workersReady"] = f"{section['learners']} learners, {section['actors']} actors"
    decision.status, events = conclude(obs, status, conds)
    decision.events = events + decision.events
