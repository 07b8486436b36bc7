"""The TrainingJob API as plain data: names, labels, and the parsed, validated spec.

The CRD schema (crds/) rejects most bad input at the API server; `parse_spec` checks what the schema cannot
(decimals that must parse, pod template details) and raises `InvalidSpec` with a message saying what to fix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from paceline.balancer import BalancingSettings
from paceline.momentum import MomentumSettings

GROUP = "paceline.dev"
VERSION = "v1alpha1"
PLURAL = "trainingjobs"
KIND = "TrainingJob"
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_JOB = "paceline.dev/job"
LABEL_RANK = "paceline.dev/rank"
LABEL_ATTEMPT = "paceline.dev/attempt"
LABEL_ROLE = "paceline.dev/role"
LABEL_POOL = "paceline.dev/pool"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "paceline"
ANNOTATION_PLAN_HASH = "paceline.dev/plan-hash"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HOSTNAME_LABEL = "kubernetes.io/hostname"

METRICS_PORT = 9400
PS_PORT = 29600  # parameter servers' update protocol (Asynchronous mode)
PS_ENTRYPOINT = ("python", "-m", "paceline_worker.asynchronous.ps")
LAUNCHER = "paceline_worker.launch"
LAUNCHER_ENTRYPOINT = ("python", "-m", LAUNCHER)  # torchrun, one process per GPU; see worker-image
DEFAULT_CHECKPOINT_ROOT = "/tmp/paceline"


class Mode(StrEnum):
    """How workers combine their updates."""

    SYNCHRONOUS = "Synchronous"
    ASYNCHRONOUS = "Asynchronous"
    REINFORCEMENT = "Reinforcement"


class RestartPolicy(StrEnum):
    """What a worker failure leads to."""

    EXIT_CODE = "ExitCode"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class InvalidSpec(ValueError):
    """The spec cannot be run; the message names the field and what to fix."""


@dataclass(frozen=True, kw_only=True)
class RunPolicy:
    """Restart behaviour."""

    restart_policy: RestartPolicy
    backoff_limit: int
    backoff_seconds: int


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A validated TrainingJob spec."""

    mode: Mode
    replicas_min: int
    replicas_max: int
    gpus_per_worker: int
    global_batch: int
    model: Mapping[str, Any]
    learning_rate: Decimal
    momentum: Decimal
    balancing: Mapping[str, Any]
    momentum_tuning: Mapping[str, Any]
    pools: tuple[str, ...]
    run_policy: RunPolicy
    template: Mapping[str, Any]
    asynchronous: Mapping[str, Any]
    reinforcement: Mapping[str, Any]

    @property
    def parameter_servers(self) -> int:
        """Parameter-server shards (Asynchronous mode only; 0 otherwise)."""
        if self.mode is not Mode.ASYNCHRONOUS:
            return 0
        return int(self.asynchronous.get("parameterServers", 1))

    def plan_hash(self) -> str:
        """Digest of every field a plan depends on; a change means the job must be re-planned."""
        relevant = {
            "mode": str(self.mode),
            "replicas": [self.replicas_min, self.replicas_max],
            "gpus": self.gpus_per_worker,
            "batch": self.global_batch,
            "model": self.model,
            "pools": sorted(self.pools),
            "template": self.template,
            "asynchronous": self.asynchronous,
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _decimal(value: Any, field: str, *, low: Decimal, high: Decimal, example: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidSpec(f"{field} must be a decimal string such as {example!r}, got {value!r}") from None
    if not number.is_finite() or not low <= number <= high:
        raise InvalidSpec(f"{field} must be between {low} and {high}, got {value!r}")
    return number


def _int(spec: Mapping[str, Any], key: str, default: int, field: str, *, low: int, high: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{field} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidSpec(f"{field} must be between {low} and {high}, got {value}")
    return value


def _validate_template(template: Mapping[str, Any]) -> None:
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, Mapping):
        raise InvalidSpec("spec.template.spec is required: a PodSpec with the training container")
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InvalidSpec(
            "spec.template.spec.containers needs at least one container running the training script"
        )
    for i, container in enumerate(containers):
        if not isinstance(container, Mapping) or not container.get("name") or not container.get("image"):
            raise InvalidSpec(f"spec.template.spec.containers[{i}] needs a name and an image")
    first = containers[0]
    if not first.get("command") and not first.get("args"):
        raise InvalidSpec(
            f"spec.template.spec.containers[0] ({first['name']}) needs a command or args that start the "
            "training "
            "script, e.g. command: [python, train.py]"
        )
    if pod_spec.get("restartPolicy") not in (None, "Never"):
        raise InvalidSpec(
            "spec.template.spec.restartPolicy must be Never (or unset): "
            "Paceline restarts workers per spec.runPolicy"
        )
    if pod_spec.get("nodeName"):
        raise InvalidSpec("spec.template.spec.nodeName must be unset: Paceline places workers itself")
    limits = (first.get("resources") or {}).get("limits") or {}
    if GPU_RESOURCE in limits:
        raise InvalidSpec(
            f"spec.template.spec.containers[0].resources.limits[{GPU_RESOURCE!r}] must be unset: "
            "use spec.gpusPerWorker, Paceline sets the GPU request"
        )


def parse_spec(spec: Mapping[str, Any]) -> JobSpec:
    """Validate a TrainingJob spec (already defaulted by the API server) into a JobSpec."""
    if not isinstance(spec, Mapping):
        raise InvalidSpec("spec is required")
    mode_value = spec.get("mode", Mode.SYNCHRONOUS.value)
    try:
        mode = Mode(mode_value)
    except ValueError:
        raise InvalidSpec(f"spec.mode must be one of {[m.value for m in Mode]}, got {mode_value!r}") from None
    if mode is Mode.REINFORCEMENT:
        raise InvalidSpec(
            f"spec.mode {mode.value} is not implemented by this Paceline version yet (the API reserves it); "
            "use mode: Synchronous or Asynchronous"
        )
    replicas = spec.get("replicas") or {}
    rmin = _int(replicas, "min", 1, "spec.replicas.min", low=1, high=1024)
    rmax = _int(replicas, "max", 1, "spec.replicas.max", low=1, high=1024)
    if rmin > rmax:
        raise InvalidSpec(f"spec.replicas.min ({rmin}) must not exceed spec.replicas.max ({rmax})")
    gpus = _int(spec, "gpusPerWorker", 1, "spec.gpusPerWorker", low=1, high=16)
    if "globalBatchSize" not in spec:
        raise InvalidSpec("spec.globalBatchSize is required: samples per optimizer step across all workers")
    batch = _int(spec, "globalBatchSize", 0, "spec.globalBatchSize", low=1, high=1_048_576)
    balancing = dict(spec.get("balancing") or {})
    min_per_worker = _int(
        balancing, "minBatchPerWorker", 1, "spec.balancing.minBatchPerWorker", low=1, high=65536
    )
    if batch < rmax * min_per_worker:
        raise InvalidSpec(
            f"spec.globalBatchSize ({batch}) is smaller than replicas.max ({rmax}) × "
            f"balancing.minBatchPerWorker ({min_per_worker}); raise globalBatchSize or lower replicas.max"
        )
    model = dict(spec.get("model") or {})
    if sum(key in model for key in ("preset", "graph", "configMapRef")) > 1:
        raise InvalidSpec("spec.model: set at most one of preset, graph or configMapRef")
    optimizer = spec.get("optimizer") or {}
    lr = _decimal(
        optimizer.get("learningRate", "0.1"),
        "spec.optimizer.learningRate",
        low=Decimal("1e-12"),
        high=Decimal(100),
        example="0.1",
    )
    momentum = _decimal(
        optimizer.get("momentum", "0.9"),
        "spec.optimizer.momentum",
        low=Decimal(0),
        high=Decimal("0.9999"),
        example="0.9",
    )
    tuning = dict(spec.get("momentumTuning") or {})
    floor = _decimal(
        tuning.get("floor", "-0.3"),
        "spec.momentumTuning.floor",
        low=Decimal(-1),
        high=Decimal("0.9999"),
        example="-0.3",
    )
    if floor > momentum:
        raise InvalidSpec(
            f"spec.momentumTuning.floor ({floor}) must not exceed the target "
            f"spec.optimizer.momentum ({momentum})"
        )
    try:  # the policies' own parsers check the rest (ranges, unknown keys), with fix-it messages
        MomentumSettings.from_spec(tuning, target=str(momentum))
        BalancingSettings.from_spec(balancing)
    except ValueError as err:
        raise InvalidSpec(str(err)) from None
    run = spec.get("runPolicy") or {}
    policy_value = run.get("restartPolicy", RestartPolicy.EXIT_CODE.value)
    try:
        restart_policy = RestartPolicy(policy_value)
    except ValueError:
        raise InvalidSpec(
            f"spec.runPolicy.restartPolicy must be one of {[p.value for p in RestartPolicy]}, "
            f"got {policy_value!r}"
        ) from None
    run_policy = RunPolicy(
        restart_policy=restart_policy,
        backoff_limit=_int(run, "backoffLimit", 3, "spec.runPolicy.backoffLimit", low=0, high=100),
        backoff_seconds=_int(run, "backoffSeconds", 5, "spec.runPolicy.backoffSeconds", low=0, high=300),
    )
    template = spec.get("template")
    if not isinstance(template, Mapping):
        raise InvalidSpec("spec.template is required: the pod template of every worker")
    _validate_template(template)
    pools = tuple((spec.get("placement") or {}).get("pools") or ())
    return JobSpec(
        mode=mode,
        replicas_min=rmin,
        replicas_max=rmax,
        gpus_per_worker=gpus,
        global_batch=batch,
        model=model,
        learning_rate=lr,
        momentum=momentum,
        balancing=balancing,
        momentum_tuning=tuning,
        pools=pools,
        run_policy=run_policy,
        template=template,
        asynchronous=dict(spec.get("asynchronous") or {}),
        reinforcement=dict(spec.get("reinforcement") or {}),
    )


def worker_pod_name(job: str, rank: int) -> str:
    """Pod (and hostname) of one worker rank."""
    return f"{job}-worker-{rank}"


def ps_pod_name(job: str, shard: int) -> str:
    """Pod (and hostname) of one parameter-server shard."""
    return f"{job}-ps-{shard}"


def control_name(job: str) -> str:
    """ConfigMap holding the job's plan and the versioned assignment workers follow."""
    return f"{job}-control"


def master_port(uid: str) -> int:
    """A rendezvous port derived from the job's UID (distinct per job when pods share a host, as locally)."""
    return 20000 + int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) % 10000
