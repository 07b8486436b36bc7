"""Stage 3 — children: sort the observed pods into this attempt's workers and parameter servers and stale
ones, and build whatever the plan still lacks (the headless Service, missing pods)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paceline import api
from paceline.builders import build_ps_pod, build_service, build_token_secret, build_worker_pod
from paceline.controller.decide.plan import Planned, job_ref
from paceline.momentum import MomentumPolicy, StalenessEstimator, explicit_momentum
from paceline.plan_types import sharding_json

Pod = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Children:
    workers: dict[int, Pod]  # this attempt's workers, by rank
    servers: dict[int, Pod]  # this attempt's parameter servers, by shard
    stale: list[str]  # pods of an older attempt or plan, not yet being deleted
    names: frozenset[str]  # every pod name present (a deleting pod still holds its name)


def _label(pod: Pod, key: str) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(key)


def deleting(pod: Pod) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def created_generation(pod: Pod) -> int:
    """The membership generation a pod was created in (0 for pods made before generations existed)."""
    value = (pod["metadata"].get("annotations") or {}).get(api.ANNOTATION_GENERATION)
    return int(value) if value and value.isdigit() else 0


def classify(pods: Sequence[Pod], *, attempt: int, planned: Planned, in_place: bool = False) -> Children:
    """Stage 3a: which pods belong to this attempt, spec and membership. A worker is a member's pod (its
    rank is its place in the membership), made in this generation, or earlier when its launcher restarts
    in place (`in_place`); a parameter server belongs to this generation."""
    workers: dict[int, Pod] = {}
    servers: dict[int, Pod] = {}
    stale: list[str] = []
    members = planned.members
    for pod in pods:
        annotations = pod["metadata"].get("annotations") or {}
        born = created_generation(pod)
        current = (
            _label(pod, api.LABEL_ATTEMPT) == str(attempt)
            and annotations.get(api.ANNOTATION_PLAN_HASH) == planned.plan_hash
            and (born == members.generation or (in_place and born < members.generation))
        )
        role, rank = _label(pod, api.LABEL_ROLE), members.rank(pod["metadata"]["name"])
        if current and not deleting(pod) and role == "worker" and rank is not None:
            workers[rank] = pod
        elif current and not deleting(pod) and role == "ps" and born == members.generation:
            servers[int(_label(pod, api.LABEL_RANK) or -1)] = pod
        elif role == "capacity":
            continue  # placeholders: the scale-out stage keeps them level
        elif not deleting(pod):
            stale.append(pod["metadata"]["name"])
    names = frozenset(p["metadata"]["name"] for p in pods)
    return Children(workers=workers, servers=servers, stale=stale, names=names)


def initial_explicit_momentum(spec: api.JobSpec, *, workers: int) -> float:
    """Explicit momentum before any staleness is measured: the policy on the prior (geometric staleness
    with mean M − 1, no curvature estimate yet)."""
    tuning = spec.momentum_tuning
    if tuning.policy is MomentumPolicy.FIXED:
        return tuning.target
    return explicit_momentum(
        target=tuning.target,
        learning_rate=tuning.learning_rate,
        estimate=StalenessEstimator(workers=workers).estimate(),
        floor=tuning.floor,
    )


def missing(
    job: Mapping[str, Any], spec: api.JobSpec, planned: Planned, children: Children, *, attempt: int
) -> tuple[list[dict[str, Any]], bool]:
    """Stage 3b: pods the plan still lacks, and whether an old pod still holds a name we need."""
    ref, plan, members = job_ref(job), planned.plan, planned.members
    world, port = len(plan.workers), api.master_port(ref.uid, members.generation)
    create: list[dict[str, Any]] = []
    blocked = False
    for w in plan.workers:
        name = members.pods[w.rank]
        blocked |= name in children.names and w.rank not in children.workers
        if name not in children.names:
            create.append(
                build_worker_pod(
                    ref,
                    spec=spec,
                    placement=w,
                    world_size=world,
                    attempt=attempt,
                    plan_hash=planned.plan_hash,
                    assignment=planned.assignment,
                    port=port,
                    sharding=sharding_json(plan),
                    name=name,
                    master_pod=members.pods[0],
                    generation=members.generation,
                )
            )
    momentum = initial_explicit_momentum(spec, workers=world) if spec.parameter_servers else 0.0
    for shard in range(spec.parameter_servers):
        if api.ps_pod_name(ref.name, shard) not in children.names:
            create.append(
                build_ps_pod(
                    ref,
                    spec=spec,
                    shard=shard,
                    workers=world,
                    attempt=attempt,
                    plan_hash=planned.plan_hash,
                    momentum=momentum,
                    generation=members.generation,
                )
            )
    return create, blocked


def service(job: Mapping[str, Any], observed: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The headless Service giving every pod a DNS name, when it does not exist yet."""
    ref = job_ref(job)
    return [] if observed is not None else [build_service(ref, port=api.master_port(ref.uid))]


def token_secret(job: Mapping[str, Any], token: str | None, fresh_token: str | None) -> list[dict[str, Any]]:
    """The Secret with the job's control token when none exists yet (`token` None), holding `fresh_token`;
    an existing one is never replaced (its token is in the running pods)."""
    if token is not None or not fresh_token:
        return []
    return [build_token_secret(job_ref(job), token=fresh_token)]


def unschedulable(
    pods: Mapping[int, Pod], planned: Planned, now: datetime, timeout_s: int
) -> list[tuple[str, str]]:
    """(pod, planned node) of workers that no node has taken for `timeout_s` (Pending, not bound)."""
    stuck = []
    for rank, pod in sorted(pods.items()):
        status, meta = pod.get("status") or {}, pod["metadata"]
        created = meta.get("creationTimestamp")
        if (
            (pod.get("spec") or {}).get("nodeName")
            or status.get("phase") not in (None, "Pending")
            or not created
        ):
            continue
        age = (now - datetime.fromisoformat(str(created).replace("Z", "+00:00"))).total_seconds()
        if age > timeout_s and rank < len(planned.plan.workers):
            stuck.append((meta["name"], planned.plan.workers[rank].node))
    return stuck
