"""Bad TrainingJobs: rejected by the API server (schema + CEL) or marked Failed/InvalidSpec by the operator,
each with a message that says what to fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from e2e_support import Kube, training_job, wait_for

pytestmark = pytest.mark.e2e
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


def _bad(**spec: Any) -> dict[str, Any]:
    return training_job("bad", command=SLEEP, **spec)


def _named(name: str) -> dict[str, Any]:
    return training_job(name, command=SLEEP)


def _no_containers() -> dict[str, Any]:
    doc = _bad()
    doc["spec"]["template"]["spec"]["containers"] = []
    return doc


def _template_restart_always() -> dict[str, Any]:
    doc = _bad()
    doc["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    return doc


REJECTED_BY_API_SERVER = [
    ("min>max", _bad(replicas=(4, 2)), "spec.replicas.min must be less than or equal to"),
    ("batch too small", _bad(replicas=(1, 8), globalBatchSize=4), "globalBatchSize must be at least"),
    ("unknown mode", _bad(mode="Turbo"), 'supported values: "Synchronous", "Asynchronous", "Reinforcement"'),
    ("lr not a number", _bad(optimizer={"learningRate": "fast"}), "spec.optimizer.learningRate"),
    ("lr zero", _bad(optimizer={"learningRate": "0"}), "learningRate must be a decimal in (0, 100]"),
    ("momentum >= 1", _bad(optimizer={"momentum": "1.5"}), "momentum must be a decimal in [0, 1)"),
    (
        "two models",
        _bad(model={"preset": "alexnet", "configMapRef": {"name": "g"}}),
        "set at most one of preset",
    ),
    ("unknown preset", _bad(model={"preset": "resnet9000"}), "spec.model.preset"),
    ("no containers", _no_containers(), "needs at least one container"),
    ("restartPolicy Always", _template_restart_always(), "restartPolicy must be Never"),
    (
        "async settings on sync job",
        _bad(asynchronous={"parameterServers": 2}),
        "only allowed with mode: Asynchronous",
    ),
    ("zero GPUs", _bad(gpusPerWorker=0), "spec.gpusPerWorker"),
    ("name too long", _named("j" * 51), "metadata.name must be at most 50 characters"),
    ("name with a dot", _named("my.job"), "no dots"),
    ("unknown field", _bad(replica={"min": 1}), 'unknown field "spec.replica"'),
    (
        "claim and template",
        _bad(checkpoint={"claimName": "c", "volumeClaimTemplate": {"accessModes": ["ReadWriteMany"]}}),
        "set claimName (an existing PersistentVolumeClaim) or volumeClaimTemplate",
    ),
    ("budget not a number", _bad(elastic={"provision": {"budgetPerHour": "cheap"}}), "budgetPerHour"),
    ("pending timeout too short", _bad(elastic={"pendingTimeoutSeconds": 5}), "pendingTimeoutSeconds"),
]


@pytest.mark.parametrize(
    ("case", "doc", "message"), REJECTED_BY_API_SERVER, ids=[c[0] for c in REJECTED_BY_API_SERVER]
)
def test_api_server_rejects_with_a_fix_it_message(
    kube: Kube, namespace: str, case: str, doc: dict, message: str
) -> None:
    proc = kube.apply(doc, namespace)
    assert proc.returncode != 0, f"{case} was accepted"
    assert message in proc.stderr, proc.stderr
    assert kube.get("tj", doc["metadata"]["name"], namespace) is None


def test_mode_is_immutable(kube: Kube, namespace: str) -> None:
    doc = training_job("fixed", command=SLEEP, replicas=(1, 1))
    assert kube.apply(doc, namespace).returncode == 0
    changed = copy.deepcopy(doc)
    changed["spec"]["mode"] = "Asynchronous"
    proc = kube.apply(changed, namespace)
    assert proc.returncode != 0 and "spec.mode is immutable" in proc.stderr


def _no_command() -> dict[str, Any]:
    doc = training_job("opbad", command=SLEEP)
    del doc["spec"]["template"]["spec"]["containers"][0]["command"]
    return doc


def _gpu_in_template() -> dict[str, Any]:
    doc = training_job("opbad", command=SLEEP)
    doc["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "2"}}
    return doc


MARKED_INVALID_BY_OPERATOR = [
    ("no command", _no_command(), "needs a command or args"),
    ("GPU limit in template", _gpu_in_template(), "use spec.gpusPerWorker"),
    (
        "floor above target",
        training_job("opbad", command=SLEEP, optimizer={"momentum": "0.5"}, momentumTuning={"floor": "0.8"}),
        "must not exceed the target spec.optimizer.momentum",
    ),
    (
        "claim template without access modes",
        training_job(
            "opbad",
            command=SLEEP,
            checkpoint={"volumeClaimTemplate": {"resources": {"requests": {"storage": "1Gi"}}}},
        ),
        "volumeClaimTemplate needs accessModes",
    ),
]


@pytest.mark.parametrize(
    ("case", "doc", "message"), MARKED_INVALID_BY_OPERATOR, ids=[c[0] for c in MARKED_INVALID_BY_OPERATOR]
)
def test_operator_marks_invalid_spec(kube: Kube, namespace: str, case: str, doc: dict, message: str) -> None:
    assert kube.apply(doc, namespace).returncode == 0, case

    def failed() -> dict | None:
        job = kube.get("tj", "opbad", namespace) or {}
        cond = next(
            (c for c in (job.get("status") or {}).get("conditions", []) if c["type"] == "Failed"), None
        )
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for("Failed/InvalidSpec", failed, timeout_s=30)
    assert cond["reason"] == "InvalidSpec" and message in cond["message"]
    warnings = [
        e for e in kube.events(namespace, "opbad") if e["type"] == "Warning" and e["reason"] == "InvalidSpec"
    ]
    assert warnings and message in warnings[0]["message"]
    assert not kube.items("pods", namespace, "paceline.dev/job=opbad")
