"""One pass for one TrainingJob, on a snapshot of the watch cache: observe → decide → apply.

Runs in a worker thread (the Kubernetes client and worker HTTP calls block); the caller serialises passes of
the same job and keeps its cache ahead of the watch with what `apply` wrote.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paceline import api, operator_metrics
from paceline.adapters import kube
from paceline.balancer import BalancingPolicy
from paceline.capacity import Offer
from paceline.controller.apply import Applied, apply
from paceline.controller.decide import Decision, Observed, decide
from paceline.controller.inventory import GpuNode, GpuPod, JobKey, node_inventory
from paceline.controller.observe import JobMemory, learner_statuses, telemetry
from paceline.controller.planning import PlanningError, model_description, plan_for
from paceline.plan_types import JobPlan

TELEMETRY_INTERVAL_S = 2.0  # Running jobs with a live policy are observed this often


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The job and its children as the watch cache (plus our own recent writes) shows them."""

    job: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]]
    service: Mapping[str, Any] | None
    control: Mapping[str, Any] | None
    lost_control: Mapping[str, Any] | None = None  # the control last seen, if it was deleted since
    usable_nodes: frozenset[str] | None = None  # GPU nodes pods can run on now
    claims: frozenset[str] | None = None  # PersistentVolumeClaims in the job's namespace
    offers: tuple[Offer, ...] | None = None  # Karpenter NodePools' offers (None: no NodePool seen)


@dataclass(frozen=True, kw_only=True)
class PassResult:
    decision: Decision
    applied: Applied
    requeue_after: float | None  # seconds until the next pass is due without any event


def compute_plan(
    job: Mapping[str, Any],
    spec: api.JobSpec,
    *,
    nodes: Sequence[GpuNode],
    pods: Sequence[GpuPod],
    reserved: Mapping[JobKey, Mapping[str, int]],
) -> JobPlan | PlanningError:
    """Plan the job against the GPU inventory (its own pods and reservation count as free)."""
    meta = job["metadata"]
    try:
        ref = spec.config_map_ref
        config_map = kube.get_configmap(meta["namespace"], ref[0]) if ref is not None else None
        inventory = node_inventory(nodes, pods, reserved=reserved, exclude=(meta["namespace"], meta["name"]))
        return plan_for(spec, inventory, model_description(spec, config_map))
    except PlanningError as err:
        return err


def _read_token(job: Mapping[str, Any], spec: api.JobSpec | api.InvalidSpec) -> str | None:
    """The job's control token from its Secret (None: no Secret yet); not read for a spec that is invalid."""
    if not isinstance(spec, api.JobSpec):
        return None
    meta = job["metadata"]
    return kube.get_token(meta["namespace"], api.token_secret_name(meta["name"]), api.TOKEN_KEY)


def nothing_made_yet(snap: Snapshot) -> bool:
    """A job the operator has not acted on (no status, no children): its Secret cannot exist unless a pass
    crashed after creating it, and then the create answers 409 and the next pass reads it. Skips one GET per
    new job."""
    return (
        not snap.job.get("status")
        and snap.control is None
        and snap.lost_control is None
        and snap.service is None
        and not snap.pods
    )


def _created_token(created: Sequence[Mapping[str, Any]]) -> str | None:
    """The token of the Secret this pass created, if it created one."""
    for obj in created:
        if obj["kind"] == "Secret":
            return str(obj["stringData"][api.TOKEN_KEY])
    return None


def run_pass(snap: Snapshot, memory: JobMemory, *, new_plan: JobPlan | PlanningError | None) -> PassResult:
    """Observe the workers, decide, apply; what was written comes back for the cache."""
    with operator_metrics.time_reconcile():
        spec = memory.spec(snap.job)
        reinforcement = isinstance(spec, api.JobSpec) and spec.mode is api.Mode.REINFORCEMENT
        live = (
            telemetry(snap.job, spec, snap.pods, snap.control, memory)
            if isinstance(spec, api.JobSpec) and not reinforcement
            else None
        )
        token = memory.token or (None if nothing_made_yet(snap) else _read_token(snap.job, spec))
        observed = Observed(
            job=snap.job,
            spec=spec,
            pods=snap.pods,
            service=snap.service,
            control=snap.control,
            lost_control=snap.lost_control,
            now=datetime.now(UTC),
            new_plan=new_plan,
            rejected=memory.rejected,
            telemetry=live,
            usable_nodes=snap.usable_nodes,
            claims=snap.claims,
            generations_acked=dict(memory.generations_acked),
            offers=snap.offers,
            token=token,
            fresh_token=secrets.token_urlsafe(32) if token is None else None,
            learners=learner_statuses(snap.pods) if reinforcement else {},
        )
        decision = decide(observed)
        applied = apply(snap.job, decision, token=token)
        memory.generations_acked.update(applied.generations_acked)
        memory.token = None if applied.token_refused else token or _created_token(applied.created)
    if applied.rejected is not None:
        memory.rejected = applied.rejected
        return PassResult(decision=decision, applied=applied, requeue_after=0.0)
    requeue = decision.requeue_after
    live_policy = isinstance(spec, api.JobSpec) and (
        spec.mode is api.Mode.ASYNCHRONOUS or spec.balancing.policy is BalancingPolicy.DYNAMIC
    )
    if (decision.status or {}).get("phase") == "Running" and live_policy:
        requeue = min(requeue or TELEMETRY_INTERVAL_S, TELEMETRY_INTERVAL_S)
    return PassResult(decision=decision, applied=applied, requeue_after=requeue)
