"""GPU inventory of the cluster (pure): usable GPU nodes, the GPUs pods hold, and the GPUs Paceline's own
plans have reserved but whose pods the watch cache may not show yet."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from paceline import api
from paceline.capacity import Offer, price_per_gpu_hour
from paceline.plan_types import JobPlan, NodeCapacity

TERMINAL_PHASES = ("Succeeded", "Failed")
JobKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, kw_only=True)
class GpuNode:
    """A Ready, schedulable node with GPUs."""

    name: str
    pool: str
    gpu_product: str
    gpus: int


@dataclass(frozen=True, kw_only=True)
class GpuPod:
    """GPUs a live pod holds on its node; `job` is set for Paceline's own pods."""

    node: str
    gpus: int
    job: JobKey | None


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


def gpu_node(node: Mapping[str, Any]) -> GpuNode | None:
    """The node as the planner sees it, or None when it has no usable GPU."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    gpus = _quantity(((node.get("status") or {}).get("allocatable") or {}).get(api.GPU_RESOURCE, 0))
    if gpus <= 0 or (node.get("spec") or {}).get("unschedulable") or not _ready(node):
        return None
    return GpuNode(
        name=meta["name"],
        pool=labels.get(api.LABEL_POOL) or labels.get("node.kubernetes.io/instance-type") or "default",
        gpu_product=labels.get(api.GPU_PRODUCT_LABEL, "unknown"),
        gpus=gpus,
    )


def node_pool_offer(pool: Mapping[str, Any]) -> Offer | None:
    """What a Karpenter NodePool offers: its GPU type (from a `nvidia.com/gpu.product In [one value]`
    requirement or template label), GPUs left under its limit, price per GPU-hour; None without a GPU type."""
    meta, spec = pool.get("metadata") or {}, pool.get("spec") or {}
    template = spec.get("template") or {}
    product = ((template.get("metadata") or {}).get("labels") or {}).get(api.GPU_PRODUCT_LABEL)
    for req in (template.get("spec") or {}).get("requirements") or []:
        values = req.get("values") or []
        if req.get("key") == api.GPU_PRODUCT_LABEL and req.get("operator") == "In" and len(values) == 1:
            product = values[0]
    if not product:
        return None
    limit = (spec.get("limits") or {}).get(api.GPU_RESOURCE)
    used = _quantity(((pool.get("status") or {}).get("resources") or {}).get(api.GPU_RESOURCE, 0))
    override = (meta.get("annotations") or {}).get(api.PRICE_ANNOTATION)
    try:
        price = float(override) if override else price_per_gpu_hour(product)
    except ValueError:
        price = price_per_gpu_hour(product)
    return Offer(
        pool=meta["name"],
        gpu_product=product,
        gpus_left=None if limit is None else max(_quantity(limit) - used, 0),
        price_per_gpu_hour=price if price and price > 0 else None,
    )


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


def gpu_pod(pod: Mapping[str, Any]) -> GpuPod | None:
    """The GPUs a bound, live pod holds, or None."""
    meta = pod.get("metadata") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") in TERMINAL_PHASES:
        return None
    gpus = gpus_requested(pod)
    if gpus <= 0:
        return None
    labels = meta.get("labels") or {}
    ours = labels.get(api.LABEL_MANAGED_BY) == api.MANAGED_BY and api.LABEL_JOB in labels
    return GpuPod(
        node=node, gpus=gpus, job=(meta.get("namespace", ""), labels[api.LABEL_JOB]) if ours else None
    )


def reservation(plan: JobPlan) -> dict[str, int]:
    """GPUs a plan holds, by node."""
    held: dict[str, int] = defaultdict(int)
    for worker in plan.workers:
        held[worker.node] += worker.gpus
    return dict(held)


def node_inventory(
    nodes: Iterable[GpuNode],
    pods: Iterable[GpuPod],
    *,
    reserved: Mapping[JobKey, Mapping[str, int]] | None = None,
    exclude: JobKey | None = None,
) -> list[NodeCapacity]:
    """GPU nodes with the GPUs still free. A job with a reservation counts by its plan (its pods may not be
    in the cache yet), others by their pods; the job being planned (`exclude`) counts as free."""
    reserved = reserved or {}
    used: dict[str, int] = defaultdict(int)
    for job, held in reserved.items():
        if job != exclude:
            for node, gpus in held.items():
                used[node] += gpus
    for pod in pods:
        if pod.job is None or (pod.job not in reserved and pod.job != exclude):
            used[pod.node] += pod.gpus
    return sorted(
        (
            NodeCapacity(
                name=n.name,
                pool=n.pool,
                gpu_product=n.gpu_product,
                gpus_allocatable=n.gpus,
                gpus_free=max(0, n.gpus - used[n.name]),
            )
            for n in nodes
        ),
        key=lambda n: n.name,
    )
