"""The worker's side of the plan wire contract: parsing, fix-it errors, and the operator's writer pinned."""

from __future__ import annotations

import json

import pytest

from paceline.plan_types import (
    Executed,
    JobPlan,
    Layout,
    ModuleSplit,
    SplitStyle,
    WorkerPlacement,
    sharding_json,
)
from paceline_worker.execution_plan import DATA_PARALLEL, PlanError, parse_plan


def _plan(**splits: ModuleSplit) -> JobPlan:
    worker = WorkerPlacement(rank=0, node="n", pool="p", gpu_product="g", gpus=2, batch_share=8)
    return JobPlan(
        strategy="s",
        summary="s",
        workers=(worker,),
        executed=Executed.HYBRID,
        tensor_parallel=2,
        splits=tuple(splits.values()),
    )


def test_operator_wire_form_parses_into_the_same_splits() -> None:
    plan = _plan(
        a=ModuleSplit(
            module="enc.fc1",
            layer="fc1",
            kind="linear",
            style=SplitStyle.COLWISE,
            shape=(64, 32),
            output=Layout.SHARD,
        ),
        b=ModuleSplit(
            module="enc.fc2",
            layer="fc2",
            kind="linear",
            style=SplitStyle.ROWWISE,
            shape=(32, 64),
            input=Layout.SHARD,
        ),
        c=ModuleSplit(module="emb", layer="emb", kind="embedding", style=SplitStyle.ROWWISE, shape=(100, 8)),
    )
    parsed = parse_plan(sharding_json(plan))
    assert parsed.tensor_parallel == 2 and parsed.hybrid
    by_name = {m.module: m for m in parsed.modules}
    assert by_name["enc.fc1"].output == "shard" and by_name["enc.fc1"].weight_dim == 0
    assert by_name["enc.fc2"].input == "shard" and by_name["enc.fc2"].weight_dim == 1
    assert by_name["emb"].weight_dim == 0 and not by_name["emb"].bias_sharded
    assert by_name["enc.fc1"].bias_sharded


def test_empty_or_unset_plan_is_data_parallel() -> None:
    assert parse_plan(None) == DATA_PARALLEL and parse_plan("") == DATA_PARALLEL
    assert not parse_plan('{"tensorParallel": 1, "modules": {}}').hybrid


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tensorParallel": 0}, "tensorParallel must be an integer >= 1"),
        ({"tensorParallel": 1, "modules": {"fc": {}}}, "tensorParallel is 1"),
        ({"tensorParallel": 2, "modules": {"fc 1": {}}}, "not a qualified module name"),
        ({"tensorParallel": 2, "modules": {"fc": {"kind": "conv"}}}, "kind 'conv'"),
        ({"tensorParallel": 2, "modules": {"fc": {"kind": "linear", "style": "diag"}}}, "style 'diag'"),
        ({"tensorParallel": 2, "modules": {"fc": {"kind": "linear", "style": "colwise"}}}, "shape must be"),
        (
            {"tensorParallel": 2, "modules": {"fc": {"kind": "linear", "style": "colwise", "shape": [5, 4]}}},
            "(size 5) does not divide by tensorParallel=2",
        ),
        (
            {
                "tensorParallel": 2,
                "modules": {"fc": {"kind": "linear", "style": "colwise", "shape": [4, 4], "input": "shard"}},
            },
            "may shard only its output",
        ),
    ],
)
def test_bad_plans_name_what_to_fix(doc: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_plan(json.dumps(doc))


def test_tensor_group_must_fit_in_a_pod() -> None:
    plan = parse_plan('{"tensorParallel": 4, "modules": {}}')
    with pytest.raises(PlanError, match="does not divide the 2 ranks of a pod"):
        plan.check_world(local_world_size=2)
