"""Turn a validated spec plus the GPU inventory into a JobPlan (pure), through the planner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from paceline import api
from paceline.plan_types import JobPlan, NodeCapacity
from paceline.planner import GraphError, PlacementError, load_graph, plan_job
from paceline.planner.search import SearchTooLarge
from paceline.reasons import Reason


class PlanningError(RuntimeError):
    """No plan fits the cluster right now (or the model description is unusable); says what is missing."""

    def __init__(self, message: str, *, reason: Reason = Reason.UNSCHEDULABLE) -> None:
        super().__init__(message)
        self.reason = reason


def worker_slots(spec: api.JobSpec, nodes: Sequence[NodeCapacity]) -> int:
    """How many workers of spec.gpusPerWorker GPUs fit in the allowed pools right now."""
    return sum(n.gpus_free // spec.gpus_per_worker for n in nodes if not spec.pools or n.pool in spec.pools)


def plan_for(spec: api.JobSpec, nodes: Sequence[NodeCapacity], model: Mapping[str, Any] | None) -> JobPlan:
    """Plan as many workers as fit (≤ replicas.max, ≥ replicas.min) with the heterogeneous planner."""
    try:
        graph = load_graph(model) if model else None
    except GraphError as err:
        raise PlanningError(f"spec.model: {err}", reason=Reason.INVALID_MODEL) from None
    if not any(not spec.pools or n.pool in spec.pools for n in nodes):
        pools = ", ".join(sorted({n.pool for n in nodes})) or "none"
        raise PlanningError(
            f"no Ready GPU node in the allowed pools {list(spec.pools)} (pools present: {pools})"
        )
    slots = worker_slots(spec, nodes)
    workers = min(spec.replicas_max, slots)
    if workers < spec.replicas_min:
        raise PlanningError(
            f"only {slots} worker slot(s) of {spec.gpus_per_worker} GPU(s) free in the allowed pools; "
            f"spec.replicas.min is {spec.replicas_min}"
        )
    try:
        return plan_job(
            graph=graph,
            nodes=nodes,
            workers=workers,
            gpus_per_worker=spec.gpus_per_worker,
            global_batch=spec.global_batch,
            allowed_pools=spec.pools,
        )
    except PlacementError as err:
        raise PlanningError(str(err)) from None
    except SearchTooLarge as err:
        raise PlanningError(
            f"spec.model: the layer graph is too densely connected to plan ({err}); describe it with fewer "
            "cross-layer inputs (group branches into one layer), or drop spec.model for data parallelism",
            reason=Reason.INVALID_MODEL,
        ) from None


def model_description(spec: api.JobSpec, config_map: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The model the planner reads: spec.model, with a configMapRef replaced by the graph the ConfigMap
    holds (`config_map` is that ConfigMap, None when it does not exist)."""
    ref = spec.config_map_ref
    if ref is None:
        return spec.model or None
    name, key = ref
    if config_map is None:
        raise PlanningError(f"spec.model.configMapRef: ConfigMap {name!r} not found in the job's namespace")
    text = (config_map.get("data") or {}).get(key)
    if text is None:
        raise PlanningError(f"spec.model.configMapRef: ConfigMap {name!r} has no key {key!r}")
    try:
        return {"graph": yaml.safe_load(text)}
    except yaml.YAMLError as err:
        raise PlanningError(f"spec.model.configMapRef: {name}/{key} is not valid YAML/JSON: {err}") from None
