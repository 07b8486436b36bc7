"""A catalogue of bad TrainingJobs and the fix-it message each must be refused with: by the API server
(schema, CEL, field validation) or by the operator (a `Failed`/`InvalidSpec` or `Planned`/`InvalidModel`
condition with a Warning event). The e2e tests and `bench/faults.py` apply the same catalogue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from paceline.planner.graph_io import MAX_LAYERS
from paceline_dev.jobs import layer_graph, training_job
from paceline_dev.localcluster.cluster import LocalCluster

SLEEP = ["python", "-c", "import time; time.sleep(600)"]
OPERATOR_JOB = "opbad"  # every operator case uses this name: one at a time per namespace


@dataclass(frozen=True, kw_only=True)
class BadSpec:
    case: str
    doc: dict[str, Any]
    message: str  # what the refusal must say (names the field and the fix)
    refused_by: Literal["api-server", "operator"]
    condition: tuple[str, str] = ("Failed", "InvalidSpec")  # operator cases: (type, reason) set to it
    create: bool = False  # too large for `kubectl apply`'s last-applied annotation: `kubectl create`


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


def _api(case: str, message: str, **spec: Any) -> BadSpec:
    return BadSpec(
        case=case, doc=training_job("bad", command=SLEEP, **spec), message=message, refused_by="api-server"
    )


def _api_doc(case: str, message: str, change: Callable[[dict[str, Any]], None], name: str = "bad") -> BadSpec:
    doc = training_job(name, command=SLEEP)
    change(doc)
    return BadSpec(case=case, doc=doc, message=message, refused_by="api-server")


def _operator(
    case: str, message: str, *, change: Callable[[dict[str, Any]], None] | None = None, **spec: Any
) -> BadSpec:
    doc = training_job(OPERATOR_JOB, command=SLEEP, **spec)
    if change is not None:
        change(doc)
    return BadSpec(case=case, doc=doc, message=message, refused_by="operator")


def _model(case: str, message: str, graph: dict[str, Any], *, create: bool = False) -> BadSpec:
    doc = training_job(OPERATOR_JOB, command=SLEEP, model={"graph": graph})
    return BadSpec(
        case=case,
        doc=doc,
        message=message,
        refused_by="operator",
        condition=("Planned", "InvalidModel"),
        create=create,
    )


def _first_layer_from(source: str, layers: int) -> dict[str, Any]:
    """A chain whose first layer reads `source`: a later layer (a cycle) or a name that is no layer."""
    graph = layer_graph(layers)
    graph["layers"][0]["inputs"] = [{"from": source, "axes": ["b", "k"]}]
    return graph


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change setting a dotted path under the document (missing mappings are created)."""

    def change(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = doc
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value

    return change


BAD_SPECS: tuple[BadSpec, ...] = (
    # -- the API server: OpenAPI schema, CEL rules, strict field validation ---------------------------
    _api("min>max", "spec.replicas.min must be less than or equal to", replicas=(4, 2)),
    _api("min zero", "spec.replicas.min: Invalid value: 0", replicas=(0, 2)),
    _api("max above the limit", "spec.replicas.max: Invalid value: 1025", replicas=(1, 1025)),
    _api("batch too small", "globalBatchSize must be at least", replicas=(1, 8), globalBatchSize=4),
    _api("batch above the limit", "spec.globalBatchSize: Invalid value: 2097152", globalBatchSize=2097152),
    _api("unknown mode", 'supported values: "Synchronous", "Asynchronous", "Reinforcement"', mode="Turbo"),
    _api("lr not a number", "spec.optimizer.learningRate", optimizer={"learningRate": "fast"}),
    _api("lr zero", "learningRate must be a decimal in (0, 100]", optimizer={"learningRate": "0"}),
    _api("momentum >= 1", "momentum must be a decimal in [0, 1)", optimizer={"momentum": "1.5"}),
    _api("momentum floor >= 1", "spec.momentumTuning.floor", momentumTuning={"floor": "1"}),
    _api(
        "two models",
        "set at most one of preset",
        model={"preset": "alexnet", "configMapRef": {"name": "g"}},
    ),
    _api("unknown preset", "spec.model.preset", model={"preset": "resnet9000"}),
    _api_doc("no containers", "needs at least one container", _set("spec.template.spec.containers", [])),
    _api_doc(
        "restartPolicy Always",
        "restartPolicy must be Never",
        _set("spec.template.spec.restartPolicy", "Always"),
    ),
    _api(
        "async settings on sync job",
        "only allowed with mode: Asynchronous",
        asynchronous={"parameterServers": 2},
    ),
    _api("zero GPUs", "spec.gpusPerWorker", gpusPerWorker=0),
    _api("GPUs above the limit", "spec.gpusPerWorker: Invalid value: 17", gpusPerWorker=17),
    _api_doc("name too long", "metadata.name must be at most 50 characters", lambda d: None, name="j" * 51),
    _api_doc("name with a dot", "no dots", lambda d: None, name="my.job"),
    _api_doc("name with capitals", "metadata.name", lambda d: None, name="MyJob"),
    _api("unknown field", 'unknown field "spec.replica"', replica={"min": 1}),
    _api(
        "unknown nested field",
        'unknown field "spec.optimizer.learning_rate"',
        optimizer={"learning_rate": "0.1"},
    ),
    _api(
        "claim and template",
        "set claimName (an existing PersistentVolumeClaim) or volumeClaimTemplate",
        checkpoint={"claimName": "c", "volumeClaimTemplate": {"accessModes": ["ReadWriteMany"]}},
    ),
    _api("budget not a number", "budgetPerHour", elastic={"provision": {"budgetPerHour": "cheap"}}),
    _api("pending timeout too short", "pendingTimeoutSeconds", elastic={"pendingTimeoutSeconds": 5}),
    _api("horizon too short", "spec.elastic.horizonSeconds", elastic={"horizonSeconds": 30}),
    _api("negative backoff limit", "spec.runPolicy.backoffLimit", runPolicy={"backoffLimit": -1}),
    _api(
        "unknown restart policy",
        "spec.runPolicy.restartPolicy: Unsupported value",
        runPolicy={"restartPolicy": "Sometimes"},
    ),
    _api(
        "too many pools", "spec.placement.pools: Too many", placement={"pools": [f"p{i}" for i in range(65)]}
    ),
    _api("cooldown negative", "spec.balancing.cooldownSeconds", balancing={"cooldownSeconds": -5}),
    # -- the operator: what needs more than one object, or the planner, to judge ------------------------
    _operator("no command", "needs a command or args", change=lambda d: _container(d).pop("command")),
    _operator(
        "GPU limit in template",
        "use spec.gpusPerWorker",
        change=lambda d: _container(d).update(resources={"limits": {"nvidia.com/gpu": "2"}}),
    ),
    _operator(
        "floor above target",
        "must not exceed the target spec.optimizer.momentum",
        optimizer={"momentum": "0.5"},
        momentumTuning={"floor": "0.8"},
    ),
    _operator(
        "claim template without access modes",
        "volumeClaimTemplate needs accessModes",
        checkpoint={"volumeClaimTemplate": {"resources": {"requests": {"storage": "1Gi"}}}},
    ),
    _model(
        "cyclic graph", "which is defined later; list layers in an order where", _first_layer_from("l2", 3)
    ),
    _model("graph input from nowhere", "which is not a layer of this graph", _first_layer_from("nowhere", 2)),
    _model(
        "huge graph",
        f"{MAX_LAYERS + 1} layers; the planner takes at most {MAX_LAYERS}",
        layer_graph(MAX_LAYERS + 1),
        create=True,
    ),
    _model("densely connected graph", "too densely connected to plan", layer_graph(40, fan_in=30)),
)


@dataclass(frozen=True)
class Verdict:
    refused: bool  # refused by the layer the catalogue names, with its message
    said: str  # what the user was told (kubectl's error, or the condition's message), or what went wrong


def _get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    proc = cluster.run_kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}


def _items(cluster: LocalCluster, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
    return list(json.loads(cluster.kubectl(*args))["items"])


def judge(cluster: LocalCluster, spec: BadSpec, namespace: str, *, timeout_s: float = 60.0) -> Verdict:
    """Submit a bad spec as a user would and say whether it was refused as the catalogue expects: by the
    API server with the message, or by the operator with the condition, a Warning event and no pods."""
    verb = ["create"] if spec.create else ["apply"]
    proc = cluster.run_kubectl(
        *verb, "-n", namespace, "-f", "-", input_text=json.dumps(spec.doc), check=False
    )
    name = spec.doc["metadata"]["name"]
    if spec.refused_by == "api-server":
        stored = _get(cluster, "tj", name, namespace)
        refused = proc.returncode != 0 and spec.message in proc.stderr and not stored
        return Verdict(refused, proc.stderr.strip() or f"accepted: {proc.stdout.strip()}")
    if proc.returncode != 0:
        return Verdict(False, f"the API server rejected it, the operator should have: {proc.stderr.strip()}")
    kind, reason = spec.condition
    wanted = "True" if kind == "Failed" else "False"  # Failed=True/InvalidSpec, Planned=False/InvalidModel
    deadline = time.monotonic() + timeout_s
    while True:
        conditions = (_get(cluster, "tj", name, namespace).get("status") or {}).get("conditions") or []
        cond = next((c for c in conditions if c["type"] == kind and c["status"] == wanted), None)
        if cond is not None:
            break
        if time.monotonic() > deadline:
            return Verdict(False, f"no {kind}={wanted} condition within {timeout_s:.0f} s: {conditions}")
        time.sleep(0.5)
    if cond["reason"] != reason or spec.message not in cond["message"]:
        return Verdict(False, f"{kind} condition is {cond['reason']}: {cond['message']}")
    events = [
        e
        for e in _items(cluster, "events", namespace)
        if e["involvedObject"].get("name") == name and e["type"] == "Warning" and e["reason"] == "InvalidSpec"
    ]
    if not any(spec.message in e["message"] for e in events):
        return Verdict(False, f"no Warning InvalidSpec event saying {spec.message!r}: {events}")
    if _items(cluster, "pods", namespace, f"paceline.dev/job={name}"):
        return Verdict(False, "pods were created for it")
    return Verdict(True, cond["message"])
