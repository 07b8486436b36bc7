"""The bad-spec catalogue the e2e tests and bench/faults.py apply: what the operator must refuse is refused by
its pure parser and planner with the catalogued message (the API-server cases are judged on the real API
server, in tests/e2e/test_validation.py)."""

from __future__ import annotations

import pytest

from paceline import api
from paceline.controller.planning import PlanningError, plan_for
from paceline.plan_types import NodeCapacity
from paceline_dev.bad_specs import BAD_SPECS, BadSpec

OPERATOR = [s for s in BAD_SPECS if s.refused_by == "operator"]
NODES = [NodeCapacity(name="gpu-t4-0", pool="t4", gpu_product="Tesla-T4", gpus_allocatable=4, gpus_free=4)]


def test_the_catalogue_covers_both_layers_with_distinct_cases() -> None:
    layers = [s.refused_by for s in BAD_SPECS]
    assert layers.count("api-server") >= 25 and layers.count("operator") >= 6
    assert len({s.case for s in BAD_SPECS}) == len(BAD_SPECS)


@pytest.mark.parametrize("spec", OPERATOR, ids=[s.case for s in OPERATOR])
def test_the_operator_cases_are_refused_by_the_parser_or_the_planner(spec: BadSpec) -> None:
    kind, _ = spec.condition
    if kind == "Failed":
        with pytest.raises(api.InvalidSpec, match=spec.message.replace(".", r"\.")):
            api.parse_spec(spec.doc["spec"])
        return
    parsed = api.parse_spec(spec.doc["spec"])
    with pytest.raises(PlanningError) as err:
        plan_for(parsed, NODES, parsed.model)
    assert spec.message in str(err.value)
