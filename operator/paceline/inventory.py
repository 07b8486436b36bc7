"""GPU inventory of the cluster from Node and Pod objects (pure)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from paceline import api
from paceline.plan_types import NodeCapacity

TERMINAL_PHASES = ("Succeeded", "Failed")


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def gpus_requested(pod: Mapping[str, Any]) -> int:
    """GPUs a pod holds on its node (effective request: max of init containers vs sum of app containers)."""
    spec = pod.get("spec") or {}

    def request(container: Mapping[str, Any]) -> int:
        res = container.get("resources") or {}
        value = (res.get("requests") or {}).get(api.GPU_RESOURCE) or (res.get("limits") or {}).get(
            api.GPU_RESOURCE
        )
        return _quantity(value) if value is not None else 0

    app = sum(request(c) for c in spec.get("containers") or [])
    init = max((request(c) for c in spec.get("initContainers") or []), default=0)
    return max(app, init)


def node_inventory(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    exclude_job: str | None = None,
    exclude_namespace: str | None = None,
) -> list[NodeCapacity]:
    """Ready, schedulable GPU nodes with the GPUs still free (pods of `exclude_job` count as free)."""
    used: dict[str, int] = defaultdict(int)
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or status.get("phase") in TERMINAL_PHASES:
            continue
        if (
            exclude_job is not None
            and (meta.get("labels") or {}).get(api.LABEL_JOB) == exclude_job
            and meta.get("namespace") == exclude_namespace
        ):
            continue
        used[node] += gpus_requested(pod)
    inventory: list[NodeCapacity] = []
    for node in nodes:
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        allocatable = _quantity(
            ((node.get("status") or {}).get("allocatable") or {}).get(api.GPU_RESOURCE, 0)
        )
        if allocatable <= 0 or (node.get("spec") or {}).get("unschedulable") or not _ready(node):
            continue
        name = meta["name"]
        inventory.append(
            NodeCapacity(
                name=name,
                pool=labels.get(api.LABEL_POOL)
                or labels.get("node.kubernetes.io/instance-type")
                or "default",
                gpu_product=labels.get(api.GPU_PRODUCT_LABEL, "unknown"),
                gpus_allocatable=allocatable,
                gpus_free=max(0, allocatable - used[name]),
            )
        )
    return sorted(inventory, key=lambda n: n.name)
