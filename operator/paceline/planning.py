"""Turn a validated spec plus the GPU inventory into a JobPlan (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paceline import api
from paceline.plan_types import JobPlan, NodeCapacity, WorkerPlacement


class PlanningError(RuntimeError):
    """No plan fits the cluster right now; the message says what is missing."""


def _equal_shares(total: int, count: int) -> list[int]:
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def plan_for(spec: api.JobSpec, nodes: Sequence[NodeCapacity], graph: Mapping[str, Any] | None) -> JobPlan:
    """Data-parallel plan: as many workers as fit (≤ replicas.max, ≥ replicas.min), packed node by node."""
    del graph
    allowed = [n for n in nodes if not spec.pools or n.pool in spec.pools]
    if not allowed:
        pools = ", ".join(sorted({n.pool for n in nodes})) or "none"
        raise PlanningError(f"no Ready GPU node in the allowed pools {list(spec.pools)} (pools present: {pools})")
    slots: list[NodeCapacity] = []
    for node in sorted(allowed, key=lambda n: (-n.gpus_free, n.name)):
        slots += [node] * (node.gpus_free // spec.gpus_per_worker)
    workers = min(spec.replicas_max, len(slots))
    if workers < spec.replicas_min:
        raise PlanningError(
            f"only {len(slots)} worker slot(s) of {spec.gpus_per_worker} GPU(s) free in the allowed pools; "
            f"spec.replicas.min is {spec.replicas_min}"
        )
    shares = _equal_shares(spec.global_batch, workers)
    placements = tuple(
        WorkerPlacement(
            rank=rank, node=node.name, pool=node.pool, gpu_product=node.gpu_product, gpus=spec.gpus_per_worker,
            batch_share=shares[rank],
        )
        for rank, node in enumerate(slots[:workers])
    )  # fmt: skip
    return JobPlan(
        strategy=f"data-parallel x{workers}",
        summary=f"data-parallel x{workers}",
        workers=placements,
        reason=f"{workers} worker(s) of {spec.gpus_per_worker} GPU(s) placed on {len({p.node for p in placements})} node(s)",
    )
