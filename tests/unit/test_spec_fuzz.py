"""The spec parser refuses anything malformed with InvalidSpec (a message for the user), never another
exception: random specs built from the real field names and arbitrary JSON values."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobs import job

from paceline import api

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = {
    "mode": ["Synchronous", "Asynchronous", "Reinforcement"],
    "replicas": ["min", "max"],
    "gpusPerWorker": [],
    "globalBatchSize": [],
    "model": ["preset", "graph", "configMapRef"],
    "optimizer": ["learningRate", "momentum"],
    "balancing": ["policy", "minGainPercent", "cooldownSeconds", "halfLifeSeconds", "minBatchPerWorker"],
    "momentumTuning": ["policy", "floor", "minChange", "halfLifeUpdates"],
    "asynchronous": ["parameterServers", "maxStaleness"],
    "placement": ["pools"],
    "runPolicy": ["restartPolicy", "backoffLimit", "backoffSeconds"],
    "checkpoint": ["claimName", "volumeClaimTemplate", "intervalSteps"],
    "elastic": [
        "minGainPercent",
        "resizePauseSeconds",
        "horizonSeconds",
        "pendingTimeoutSeconds",
        "provision",
    ],
    "template": ["metadata", "spec"],
}


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec with a few fields (or sub-fields) replaced by arbitrary JSON."""
    spec: dict[str, Any] = job()["spec"]
    for _ in range(draw(st.integers(1, 4))):
        field = draw(st.sampled_from(sorted(FIELDS)))
        subs = FIELDS[field]
        if subs and draw(st.booleans()):
            block = spec.get(field)
            block = dict(block) if isinstance(block, dict) else {}
            block[draw(st.sampled_from(subs))] = draw(JSON)
            spec[field] = block
        else:
            spec[field] = draw(JSON)
    return spec


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(spec=mutated_specs())
def test_any_malformed_spec_is_an_invalid_spec_never_a_crash(spec: dict[str, Any]) -> None:
    parsed = api.parsed(spec)
    assert isinstance(parsed, api.JobSpec | api.InvalidSpec)
    if isinstance(parsed, api.InvalidSpec):
        assert str(parsed).startswith("spec"), str(parsed)  # names the field to fix
    else:
        parsed.plan_hash()  # a valid spec is usable


@settings(max_examples=100, deadline=None)
@given(raw=JSON)
def test_a_spec_that_is_not_even_an_object_is_refused(raw: Any) -> None:
    assert isinstance(api.parsed(raw), api.JobSpec | api.InvalidSpec)
