"""The operator's planning step: spec + GPU inventory → the planner's JobPlan, or a PlanningError."""

from __future__ import annotations

import pytest
from jobs import job

from paceline import api
from paceline.controller.planning import PlanningError, plan_for
from paceline.plan_types import NodeCapacity
from paceline.planner.graph_io import MAX_LAYERS
from paceline.reasons import Reason
from paceline_dev.jobs import layer_graph

NODES = [
    NodeCapacity(
        name="gpu-h100-0", pool="h100", gpu_product="NVIDIA-H100-80GB-HBM3", gpus_allocatable=8, gpus_free=2
    ),
    NodeCapacity(name="gpu-t4-0", pool="t4", gpu_product="Tesla-T4", gpus_allocatable=4, gpus_free=4),
]


def test_preset_model_gives_a_predicted_step_and_speed_weighted_shares() -> None:
    spec = api.parse_spec(job(model={"preset": "alexnet"}, replicas={"min": 2, "max": 4})["spec"])
    plan = plan_for(spec, NODES, spec.model)
    assert len(plan.workers) == 4 and sum(w.batch_share for w in plan.workers) == 128
    assert plan.predicted_step_s is not None and plan.baseline_step_s is not None
    assert plan.layers
    h100 = [w.batch_share for w in plan.workers if w.pool == "h100"]
    t4 = [w.batch_share for w in plan.workers if w.pool == "t4"]
    assert min(h100) > max(t4)  # the faster GPU type takes the larger share


def test_allowed_pools_and_capacity_bound_the_plan() -> None:
    spec = api.parse_spec(job(placement={"pools": ["h100"]}, replicas={"min": 3, "max": 4})["spec"])
    with pytest.raises(PlanningError, match=r"only 2 worker slot\(s\)") as err:
        plan_for(spec, NODES, None)
    assert err.value.reason is Reason.UNSCHEDULABLE
    spec = api.parse_spec(job(placement={"pools": ["a100"]})["spec"])
    with pytest.raises(PlanningError, match="no Ready GPU node in the allowed pools"):
        plan_for(spec, NODES, None)


def test_a_broken_inline_graph_is_an_invalid_model() -> None:
    spec = api.parse_spec(job(model={"graph": {"layers": "not a list"}})["spec"])
    with pytest.raises(PlanningError) as err:
        plan_for(spec, NODES, spec.model)
    assert err.value.reason is Reason.INVALID_MODEL and str(err.value).startswith("spec.model:")


def test_a_graph_beyond_the_layer_limit_is_an_invalid_model() -> None:
    spec = api.parse_spec(job(model={"graph": layer_graph(MAX_LAYERS + 1)})["spec"])
    with pytest.raises(PlanningError, match=f"{MAX_LAYERS + 1} layers; the planner takes at most") as err:
        plan_for(spec, NODES, spec.model)
    assert err.value.reason is Reason.INVALID_MODEL


def test_a_densely_connected_graph_is_an_invalid_model_not_a_crash() -> None:
    spec = api.parse_spec(job(model={"graph": layer_graph(40, fan_in=30)})["spec"])
    with pytest.raises(PlanningError, match="too densely connected") as err:
        plan_for(spec, NODES, spec.model)
    assert err.value.reason is Reason.INVALID_MODEL


def test_a_moderately_connected_graph_still_plans() -> None:
    spec = api.parse_spec(job(model={"graph": layer_graph(40, fan_in=4)})["spec"])
    assert plan_for(spec, NODES, spec.model).workers
