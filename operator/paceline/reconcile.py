"""One reconcile pass for one TrainingJob: fetch → decide → apply → status."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from paceline import api, kube, operator_metrics
from paceline.balancer import BalancingSettings
from paceline.builders import Assignment
from paceline.control_loop import JobControl, control_step
from paceline.decide import (
    Decision,
    Observed,
    decide,
    initial_explicit_momentum,
    needs_plan,
    pod_rejected,
)
from paceline.inventory import node_inventory
from paceline.momentum import MomentumSettings
from paceline.momentum_loop import AsyncControl, momentum_step
from paceline.plan_types import JobPlan
from paceline.planning import PlanningError, plan_for
from paceline.reasons import EventReason
from paceline.telemetry import push_assignment, scrape_all

log = logging.getLogger("paceline.reconcile")
_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
_locks_guard = threading.Lock()
_controls: dict[tuple[str, str], JobControl] = {}
_async: dict[tuple[str, str], AsyncControl] = {}


def _job_lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks[(namespace, name)]


def resolve_model(namespace: str, model: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The model description with a configMapRef replaced by the graph it points to."""
    if not model:
        return None
    ref = model.get("configMapRef")
    if ref is None:
        return model
    cm = kube.get_configmap(namespace, ref["name"])
    key = ref.get("key", "graph.yaml")
    if cm is None:
        raise PlanningError(
            f"spec.model.configMapRef: ConfigMap {ref['name']!r} not found in namespace {namespace}"
        )
    text = (cm.get("data") or {}).get(key)
    if text is None:
        raise PlanningError(f"spec.model.configMapRef: ConfigMap {ref['name']!r} has no key {key!r}")
    try:
        return {"graph": yaml.safe_load(text)}
    except yaml.YAMLError as err:
        raise PlanningError(
            f"spec.model.configMapRef: {ref['name']}/{key} is not valid YAML/JSON: {err}"
        ) from None


def compute_plan(job: Mapping[str, Any]) -> JobPlan | PlanningError:
    """Plan the job against the cluster's current GPU inventory (its own pods count as free)."""
    meta = job["metadata"]
    try:
        spec = api.parse_spec(job["spec"])
        graph = resolve_model(meta["namespace"], spec.model)
        nodes = node_inventory(
            kube.list_nodes(),
            kube.list_all_pods(),
            exclude_job=meta["name"],
            exclude_namespace=meta["namespace"],
        )
        return plan_for(spec, nodes, graph)
    except PlanningError as err:
        return err


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        return str(err.reason)


def _status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def apply(job: Mapping[str, Any], decision: Decision) -> None:
    """Carry out a decision: events, status, creates and patches, then deletes."""
    meta = job["metadata"]
    ns, name = meta["namespace"], meta["name"]
    for event in decision.events:
        kube.emit_event(job, type_=event.type, reason=str(event.reason), message=event.message)
    patch = _status_patch(job.get("status") or {}, decision.status)
    if patch:
        kube.patch_job_status(ns, name, patch)
    for obj in decision.create:
        try:
            created = kube.create(obj)
        except ApiException as err:
            if err.status != 422 or obj["kind"] != "Pod":
                raise
            rejected = pod_rejected(job, obj["metadata"]["name"], _api_message(err), now=datetime.now(UTC))
            apply({**job, "status": decision.status}, rejected)
            return
        if created:
            log.info("created %s %s/%s", obj["kind"], ns, obj["metadata"]["name"])
    if decision.patch_control is not None:
        kube.patch_configmap(decision.patch_control)
    for pod in decision.delete_pods:
        kube.delete_pod(ns, pod)
        log.info("deleted pod %s/%s", ns, pod)


def _assignment(control: Mapping[str, Any] | None) -> Assignment | None:
    data = (control or {}).get("data") or {}
    return Assignment.from_json(data["assignment.json"]) if "assignment.json" in data else None


def observe_and_rebalance(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    control: Mapping[str, Any] | None,
    status: Mapping[str, Any],
) -> None:
    """Scrape running workers, feed the balancer, publish a new assignment when it pays, update status."""
    meta = job["metadata"]
    ns, name = meta["namespace"], meta["name"]
    assignment = _assignment(control)
    if assignment is None or control is None:
        return
    spec = job.get("spec") or {}
    settings = BalancingSettings.from_spec(spec.get("balancing"))
    attempt = str(status.get("attempt") or 0)
    urls = _running_urls(pods, role="worker", attempt=attempt)
    if len(urls) != len(assignment.batch_sizes):
        return
    state = _controls.setdefault((ns, name), JobControl.create(settings))
    samples = scrape_all({rank: f"{url}/metrics" for rank, url in urls.items()})
    outcome = control_step(
        state=state, samples=samples, assignment=assignment, settings=settings, now=time.time()
    )
    if outcome.new_assignment is not None:
        kube.patch_configmap(
            {"metadata": control["metadata"], "data": {"assignment.json": outcome.new_assignment.to_json()}}
        )
    if outcome.push is not None:
        try:
            push_assignment(f"{urls[0]}/assignment", outcome.push.to_json())
        except OSError as err:  # rank 0 not listening yet: the next resync re-pushes (level-based)
            log.info("push of assignment v%d to %s/%s rank 0 failed: %s", outcome.push.version, ns, name, err)
    for event in outcome.events:
        kube.emit_event(job, type_=event.type, reason=str(event.reason), message=event.message)
    current = outcome.new_assignment or assignment
    rows = [
        {**row, "batchShare": current.batch_sizes[row["rank"]], **outcome.worker_stats.get(row["rank"], {})}
        for row in status.get("workers") or []
        if row["rank"] < len(current.batch_sizes)
    ]
    new_status = {"workers": rows, "assignmentVersion": current.version}
    if outcome.throughput:
        new_status["throughput"] = outcome.throughput
    patch = {k: v for k, v in new_status.items() if status.get(k) != v}
    if patch:
        kube.patch_job_status(ns, name, patch)
    operator_metrics.record_control(namespace=ns, job=name, outcome=outcome)


def _running_urls(pods: Sequence[Mapping[str, Any]], *, role: str, attempt: str) -> dict[int, str]:
    return {
        int(p["metadata"]["labels"][api.LABEL_RANK]): f"http://{p['status']['podIP']}:{api.METRICS_PORT}"
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running"
        and p["status"].get("podIP")
        and p["metadata"]["labels"].get(api.LABEL_ROLE) == role
        and p["metadata"]["labels"].get(api.LABEL_ATTEMPT) == attempt
    }


def observe_and_retune_momentum(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], status: Mapping[str, Any]
) -> None:
    """Asynchronous jobs: measured staleness → explicit momentum pushed to the PS shards, status, events."""
    meta = job["metadata"]
    ns, name = meta["namespace"], meta["name"]
    spec = api.parse_spec(job["spec"])
    attempt = str(status.get("attempt") or 0)
    workers = _running_urls(pods, role="worker", attempt=attempt)
    shards = _running_urls(pods, role="ps", attempt=attempt)
    if len(shards) != spec.parameter_servers or len(workers) != len(status.get("workers") or []):
        return  # only a complete worker set is a worker-count change worth retuning for
    state = _async.get((ns, name))
    if state is None:
        settings = MomentumSettings.from_spec(spec.momentum_tuning, target=str(spec.momentum))
        world = len(status.get("workers") or []) or 1
        state = AsyncControl.create(
            settings=settings, workers=world, initial_explicit=initial_explicit_momentum(spec, workers=world)
        )
        _async[(ns, name)] = state
    if state.attempt != attempt:
        state.attempt, state.cursors = attempt, {}
    samples = scrape_all({rank: f"{url}/metrics" for rank, url in workers.items()})
    speeds = {f"w{rank}": s.compute_samples_per_second for rank, s in samples.items()}
    decision = momentum_step(state, shard_urls=shards, worker_speeds=speeds)
    if decision is not None:
        kube.emit_event(
            job, type_="Normal", reason=str(EventReason.MOMENTUM_RETUNED), message=decision.reason
        )
    if state.status and status.get("momentum") != state.status:
        kube.patch_job_status(ns, name, {"momentum": state.status})


def forget(namespace: str, name: str) -> None:
    """Drop in-memory control state of a deleted job."""
    _controls.pop((namespace, name), None)
    _async.pop((namespace, name), None)
    operator_metrics.forget_job(namespace=namespace, job=name)


def reconcile(namespace: str, name: str) -> float | None:
    """Bring one TrainingJob's children and status in line with its spec; returns a requeue delay if any."""
    with _job_lock(namespace, name):
        job = kube.get_job(namespace, name)
        if job is None:
            return None
        control = kube.get_configmap(namespace, api.control_name(name))
        new_plan = compute_plan(job) if needs_plan(job, control) else None
        observed = Observed(
            job=job,
            pods=kube.list_job_pods(namespace, name),
            service=kube.get_service(namespace, name),
            control=control,
            now=datetime.now(UTC),
            new_plan=new_plan,
        )
        with operator_metrics.time_reconcile():
            decision = decide(observed)
            apply(job, decision)
            spec = job.get("spec") or {}
            dynamic = (spec.get("balancing") or {}).get("policy", "Dynamic") == "Dynamic"
            running = decision.status.get("phase") == "Running"
            mode = spec.get("mode", "Synchronous")
            if running and mode == "Synchronous" and dynamic:
                observe_and_rebalance(job, observed.pods, control, decision.status)
            elif running and mode == "Asynchronous":
                observe_and_retune_momentum(job, observed.pods, decision.status)
        return decision.requeue_after
