"""One reconcile pass for one TrainingJob: fetch → decide → apply → status."""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from paceline import api, kube
from paceline.decide import Decision, Observed, decide, needs_plan, pod_rejected
from paceline.inventory import node_inventory
from paceline.plan_types import JobPlan
from paceline.planning import PlanningError, plan_for

log = logging.getLogger("paceline.reconcile")
_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
_locks_guard = threading.Lock()


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
        raise PlanningError(f"spec.model.configMapRef: ConfigMap {ref['name']!r} not found in namespace {namespace}")
    text = (cm.get("data") or {}).get(key)
    if text is None:
        raise PlanningError(f"spec.model.configMapRef: ConfigMap {ref['name']!r} has no key {key!r}")
    try:
        return {"graph": yaml.safe_load(text)}
    except yaml.YAMLError as err:
        raise PlanningError(f"spec.model.configMapRef: {ref['name']}/{key} is not valid YAML/JSON: {err}") from None


def compute_plan(job: Mapping[str, Any]) -> JobPlan | PlanningError:
    """Plan the job against the cluster's current GPU inventory (its own pods count as free)."""
    meta = job["metadata"]
    try:
        spec = api.parse_spec(job["spec"])
        graph = resolve_model(meta["namespace"], spec.model)
        nodes = node_inventory(
            kube.list_nodes(), kube.list_all_pods(), exclude_job=meta["name"], exclude_namespace=meta["namespace"]
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
        decision = decide(observed)
        apply(job, decision)
        return decision.requeue_after
