"""kopf wiring, nothing more: the watch-cache indices, thin event handlers that wake a job's runner, and
start-up/clean-up of the runners (`paceline.controller.runner`). No finalizer, no polling."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from paceline import api
from paceline.controller.inventory import GpuNode, GpuPod, JobKey, gpu_node, gpu_pod
from paceline.controller.runner import Cache, Fleet

OURS: dict[str, Any] = {api.LABEL_MANAGED_BY: api.MANAGED_BY, api.LABEL_JOB: kopf.PRESENT}
CONTROL: dict[str, Any] = {**OURS, api.LABEL_ROLE: "control"}
POD_STATUS_KEYS = ("phase", "podIP", "reason", "containerStatuses")


def _meta(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    keep = ("name", "namespace", "uid", "labels", "annotations", "deletionTimestamp", "resourceVersion")
    return {k: meta[k] for k in keep if k in meta}


def compact_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a decision reads of a pod (the cache holds thousands: no managedFields, no full spec)."""
    status = body.get("status") or {}
    return {
        "kind": "Pod",
        "metadata": _meta(body),
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": {k: status[k] for k in POD_STATUS_KEYS if k in status},
    }


@kopf.index("v1", "pods", labels=OURS)
async def paceline_pods(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[JobKey, dict[str, Any]]:
    """Paceline's pods, by (namespace, job)."""
    return {(namespace or "", labels[api.LABEL_JOB]): compact_pod(body)}


@kopf.index("v1", "pods")
async def gpu_pods(body: kopf.Body, **_: Any) -> dict[str, GpuPod] | None:
    """GPUs held by live pods, by node (every pod in the cluster counts for planning)."""
    held = gpu_pod(body)
    return None if held is None else {held.node: held}


@kopf.index("v1", "nodes")
async def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, GpuNode] | None:
    """Ready, schedulable GPU nodes, by name."""
    node = gpu_node(body)
    return None if node is None else {node.name: node}


@kopf.index("v1", "persistentvolumeclaims")
async def claims(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[JobKey, str]:
    """Every PersistentVolumeClaim's phase, by (namespace, name): checkpoint volumes must exist."""
    return {(namespace or "", name): str((body.get("status") or {}).get("phase") or "Pending")}


@kopf.index("v1", "configmaps", labels=CONTROL)
async def controls(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[JobKey, dict[str, Any]]:
    """Each job's control ConfigMap (plan and assignment)."""
    return {
        (namespace or "", labels[api.LABEL_JOB]): {
            "metadata": _meta(body),
            "data": dict(body.get("data") or {}),
        }
    }


@kopf.index("v1", "services", labels=OURS)
async def services(
    namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[JobKey, dict[str, Any]]:
    """Each job's headless Service."""
    return {(namespace or "", labels[api.LABEL_JOB]): {"metadata": _meta(body)}}


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **indices: Any) -> None:
    """Keep kopf's bookkeeping out of the way and start the fleet of job runners on the indices."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.paceline.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kopf.paceline.dev")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 600
    names = ("paceline_pods", "gpu_pods", "gpu_nodes", "controls", "services", "claims")
    pods, gpus, nodes, cms, svcs, pvcs = (indices[n] for n in names)
    memo.fleet = Fleet(
        Cache(pods=pods, gpu_pods=gpus, gpu_nodes=nodes, controls=cms, services=svcs, claims=pvcs)
    )


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.fleet.stop()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def on_job(
    namespace: str | None, name: str, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Any change to a TrainingJob (our own status writes too: they lead to passes that write nothing)."""
    if namespace is not None:  # TrainingJobs are namespaced; kopf types allow None for cluster-scoped kinds
        memo.fleet.job_event((namespace, name), None if type == "DELETED" else dict(body))


@kopf.on.event("v1", "nodes")
async def on_node(name: str, type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A node changed: jobs re-plan when one of theirs is lost, waiting jobs retry when one is added."""
    memo.fleet.node_event(name, usable=type != "DELETED" and gpu_node(body) is not None)


@kopf.on.event("v1", "pods", labels=OURS)
@kopf.on.event("v1", "services", labels=OURS)
@kopf.on.event("v1", "configmaps", labels=CONTROL)
async def on_child(namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    """A pod, Service or control ConfigMap of a job changed: run a pass for that job."""
    if namespace is not None:
        memo.fleet.poke((namespace, labels[api.LABEL_JOB]))
