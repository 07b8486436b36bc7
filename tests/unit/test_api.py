"""Spec validation: the operator-side checks the CRD schema cannot express."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from jobs import job

from paceline import api


def test_valid_spec_parses_with_decimals_kept_exact() -> None:
    spec = api.parse_spec(job()["spec"])
    assert spec.replicas_min == 2 and spec.replicas_max == 4
    assert spec.learning_rate == Decimal("0.05")
    assert spec.run_policy.restart_policy is api.RestartPolicy.EXIT_CODE


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"replicas": {"min": 5, "max": 2}}, "spec.replicas.min (5) must not exceed"),
        ({"globalBatchSize": 3}, "globalBatchSize (3) is smaller than replicas.max (4)"),
        ({"optimizer": {"learningRate": "fast"}}, "spec.optimizer.learningRate must be a decimal"),
        ({"optimizer": {"momentum": "1.5"}}, "spec.optimizer.momentum must be between"),
        (
            {"momentumTuning": {"floor": "0.95"}, "optimizer": {"momentum": "0.9"}},
            "floor (0.95) must not exceed",
        ),
        ({"model": {"preset": "alexnet", "graph": {}}}, "at most one of preset, graph or configMapRef"),
        ({"mode": "Turbo"}, "spec.mode must be one of"),
        ({"mode": "Reinforcement"}, "spec.reinforcement.stopping needs a rule: set targetReturn"),
        (
            {"mode": "Reinforcement", "reinforcement": {"maxPolicyLag": 20, "stopping": {"maxEnvSteps": 9}}},
            "PPO is on-policy: keep spec.reinforcement.maxPolicyLag at 8 or less",
        ),
        (
            {"mode": "Reinforcement", "reinforcement": {"actors": {"count": 1}, "learners": {"count": 2}}},
            "spec.reinforcement.learners.count (2) must not exceed actors.count (1)",
        ),
        ({"runPolicy": {"restartPolicy": "Always"}}, "restartPolicy must be one of"),
    ],
)
def test_invalid_specs_say_what_to_fix(overrides: dict, fragment: str) -> None:
    with pytest.raises(api.InvalidSpec, match=None) as err:
        api.parse_spec(job(**overrides)["spec"])
    assert fragment in str(err.value)


def test_template_rules() -> None:
    base = job()["spec"]
    no_cmd = copy.deepcopy(base)
    del no_cmd["template"]["spec"]["containers"][0]["command"]
    with pytest.raises(api.InvalidSpec, match=r"needs a command or args"):
        api.parse_spec(no_cmd)
    gpu_limit = copy.deepcopy(base)
    gpu_limit["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    with pytest.raises(api.InvalidSpec, match=r"use spec\.gpusPerWorker"):
        api.parse_spec(gpu_limit)
    pinned = copy.deepcopy(base)
    pinned["template"]["spec"]["nodeName"] = "n1"
    with pytest.raises(api.InvalidSpec, match=r"nodeName must be unset"):
        api.parse_spec(pinned)


def test_plan_hash_tracks_plan_inputs_only() -> None:
    a = api.parse_spec(job()["spec"])
    b = api.parse_spec(job(optimizer={"learningRate": "0.5"})["spec"])
    c = api.parse_spec(job(globalBatchSize=256)["spec"])
    assert a.plan_hash() == b.plan_hash()
    assert a.plan_hash() != c.plan_hash()


def test_master_port_is_stable_and_in_range() -> None:
    assert api.master_port("abc") == api.master_port("abc")
    assert 20000 <= api.master_port("xyz") < 30000
