"""The TrainingJob spec, parsed once into typed settings.

The CRD schema (crds/) rejects most bad input at the API server; `parse_spec` fills in the defaults from
`paceline.api.defaults` (the one place they live), checks what the schema cannot (decimals that must parse,
pod template details) and raises `InvalidSpec` with a message saying what to fix. Nothing downstream reads
the raw spec again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeVar

from paceline.api.defaults import CONFIG_MAP_KEY, DEFAULTS, with_defaults
from paceline.api.names import GPU_RESOURCE
from paceline.balancer import BalancingPolicy, BalancingSettings
from paceline.momentum import MomentumPolicy, MomentumSettings
from paceline_worker.rl_settings import (
    DEFAULT_MAX_POLICY_LAG,
    Algorithm,
    Dependencies,
    RlSettings,
    RlSettingsError,
    settings_from_mapping,
)

PPO_MAX_POLICY_LAG = 8  # the CRD's CEL bound for the on-policy algorithm


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
class AsyncSettings:
    """spec.asynchronous."""

    parameter_servers: int
    max_staleness: int


@dataclass(frozen=True, kw_only=True)
class ReinforcementSettings:
    """spec.reinforcement: what actors and learners run (`rl`, passed to them as PACELINE_RL) and what the
    operator alone needs (GPUs per learner)."""

    rl: RlSettings
    learner_gpus: int


@dataclass(frozen=True, kw_only=True)
class CheckpointSettings:
    """spec.checkpoint: the volume checkpoints live on (None: the container's own disk)."""

    claim_name: str | None
    claim_template: Mapping[str, Any] | None  # spec of the PVC the operator creates as <job>-checkpoint
    interval_steps: int

    def claim(self, job: str) -> str | None:
        """The PVC every worker mounts, if any."""
        return self.claim_name or (f"{job}-checkpoint" if self.claim_template is not None else None)


@dataclass(frozen=True, kw_only=True)
class ProvisionSettings:
    """spec.elastic.provision: ask the node autoscaler (Karpenter NodePools) for GPUs the cluster lacks."""

    gpu_products: tuple[str, ...]  # allowed GPU types (empty: whatever a NodePool offers)
    budget_per_hour: Decimal | None  # the job's cost ceiling, USD per hour at catalog/NodePool prices


@dataclass(frozen=True, kw_only=True)
class ElasticSettings:
    """spec.elastic: when a job whose replicas.min < replicas.max resizes into capacity that appeared."""

    min_gain_percent: int  # predicted throughput gain, net of the pause, that justifies a resize
    resize_pause_seconds: int  # what one resize is expected to cost (stop, checkpoint, restart)
    horizon_seconds: int  # the gain is weighed over this much training time
    pending_timeout_seconds: (
        int  # unschedulable this long: a worker's node is planned without, a NodePool not asked
    )
    provision: ProvisionSettings | None = None  # None: grow only into nodes that exist

    def worth_resizing(self, *, old_samples_per_s: float, new_samples_per_s: float) -> bool:
        """True when training at the new rate for the horizon, less the pause, beats the old rate by more
        than min_gain_percent."""
        if old_samples_per_s <= 0:
            return new_samples_per_s > 0
        horizon = float(self.horizon_seconds)
        after = max(horizon - self.resize_pause_seconds, 0.0) * new_samples_per_s
        return after > horizon * old_samples_per_s * (1 + self.min_gain_percent / 100)


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A validated TrainingJob spec with every default applied."""

    mode: Mode
    replicas_min: int
    replicas_max: int
    gpus_per_worker: int
    global_batch: int
    model: Mapping[str, Any]  # {} (plain data parallel), {"preset": …}, {"graph": …} or {"configMapRef": …}
    learning_rate: Decimal
    momentum: Decimal  # the target total momentum
    balancing: BalancingSettings
    momentum_tuning: MomentumSettings
    asynchronous: AsyncSettings
    pools: tuple[str, ...]
    run_policy: RunPolicy
    template: Mapping[str, Any]
    checkpoint: CheckpointSettings
    elastic: ElasticSettings
    reinforcement: ReinforcementSettings | None = None  # mode Reinforcement only

    @property
    def elastic_range(self) -> bool:
        """True when the job may run with any worker count in replicas.min..max (and resize in place)."""
        return self.replicas_min < self.replicas_max

    @property
    def parameter_servers(self) -> int:
        """Parameter-server shards (Asynchronous mode only; 0 otherwise)."""
        return self.asynchronous.parameter_servers if self.mode is Mode.ASYNCHRONOUS else 0

    @property
    def config_map_ref(self) -> tuple[str, str] | None:
        """(name, key) of the ConfigMap holding the model graph, if the model comes from one."""
        ref = self.model.get("configMapRef")
        return None if ref is None else (str(ref["name"]), str(ref.get("key") or CONFIG_MAP_KEY))

    def plan_hash(self) -> str:
        """Digest of every field a plan depends on; a change means the job must be re-planned."""
        servers = self.asynchronous
        asynchronous = {"parameterServers": servers.parameter_servers, "maxStaleness": servers.max_staleness}
        relevant = {
            "mode": str(self.mode),
            "replicas": [self.replicas_min, self.replicas_max],
            "gpus": self.gpus_per_worker,
            "batch": self.global_batch,
            "model": self.model,
            "pools": sorted(self.pools),
            "template": self.template,
            "checkpoint": [self.checkpoint.claim_name, self.checkpoint.claim_template],
            "asynchronous": asynchronous if self.mode is Mode.ASYNCHRONOUS else {},
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _decimal(value: Any, field: str, *, low: Decimal, high: Decimal, example: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidSpec(f"{field} must be a decimal string such as {example!r} (no floats), got {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidSpec(f"{field} must be a decimal string such as {example!r}, got {value!r}") from None
    if not number.is_finite() or not low <= number <= high:
        raise InvalidSpec(f"{field} must be between {low} and {high}, got {value!r}")
    return number


def _int(block: Mapping[str, Any], key: str, field: str, *, low: int, high: int) -> int:
    value = block.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{field} must be an integer (the spec has no floats), got {value!r}")
    if not low <= value <= high:
        raise InvalidSpec(f"{field} must be between {low} and {high}, got {value}")
    return value


E = TypeVar("E", bound=StrEnum)


def _choice(enum: type[E], value: Any, field: str) -> E:
    try:
        return enum(value)
    except ValueError:
        raise InvalidSpec(f"{field} must be one of {[e.value for e in enum]}, got {value!r}") from None


def _validate_template(template: Any, *, command_required: bool = True) -> Mapping[str, Any]:
    if not isinstance(template, Mapping):
        raise InvalidSpec("spec.template is required: the pod template of every worker")
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
    if command_required and not first.get("command") and not first.get("args"):
        raise InvalidSpec(
            f"spec.template.spec.containers[0] ({first['name']}) needs a command or args that start the "
            "training script, e.g. command: [python, train.py]"
        )
    if pod_spec.get("restartPolicy") not in (None, "Never"):
        raise InvalidSpec(
            "spec.template.spec.restartPolicy must be Never (or unset): "
            "Paceline restarts workers per spec.runPolicy"
        )
    if pod_spec.get("nodeName"):
        raise InvalidSpec("spec.template.spec.nodeName must be unset: Paceline places workers itself")
    if GPU_RESOURCE in ((first.get("resources") or {}).get("limits") or {}):
        raise InvalidSpec(
            f"spec.template.spec.containers[0].resources.limits[{GPU_RESOURCE!r}] must be unset: "
            "use spec.gpusPerWorker, Paceline sets the GPU request"
        )
    return template


def parse_balancing(raw: Mapping[str, Any]) -> BalancingSettings:
    """spec.balancing, defaults applied."""
    path, block = "spec.balancing", with_defaults(raw, DEFAULTS["balancing"])
    return BalancingSettings(
        policy=_choice(BalancingPolicy, block.get("policy"), f"{path}.policy"),
        min_gain_percent=_int(block, "minGainPercent", f"{path}.minGainPercent", low=0, high=100),
        cooldown_seconds=_int(block, "cooldownSeconds", f"{path}.cooldownSeconds", low=0, high=86_400),
        half_life_seconds=_int(block, "halfLifeSeconds", f"{path}.halfLifeSeconds", low=1, high=86_400),
        min_batch_per_worker=_int(
            block, "minBatchPerWorker", f"{path}.minBatchPerWorker", low=1, high=65_536
        ),
        min_shift_percent=_int(block, "minShiftPercent", f"{path}.minShiftPercent", low=1, high=500),
        false_alarm_days=_int(block, "falseAlarmDays", f"{path}.falseAlarmDays", low=1, high=36_500),
        switch_cost_steps=_int(block, "switchCostSteps", f"{path}.switchCostSteps", low=0, high=1_000),
    )


def parse_momentum_tuning(
    raw: Mapping[str, Any], *, target: Decimal, learning_rate: Decimal = Decimal("0.1")
) -> MomentumSettings:
    """spec.momentumTuning, defaults applied, around the target spec.optimizer.momentum."""
    path, block = "spec.momentumTuning", with_defaults(raw, DEFAULTS["momentumTuning"])
    floor = _decimal(
        block.get("floor"), f"{path}.floor", low=Decimal(-1), high=Decimal("0.9999"), example="-0.3"
    )
    if floor > target:
        raise InvalidSpec(
            f"{path}.floor ({floor}) must not exceed the target spec.optimizer.momentum ({target})"
        )
    min_change = _decimal(
        block.get("minChange"), f"{path}.minChange", low=Decimal(0), high=Decimal("0.5"), example="0.02"
    )
    return MomentumSettings(
        policy=_choice(MomentumPolicy, block.get("policy"), f"{path}.policy"),
        target=float(target),
        floor=float(floor),
        min_change=float(min_change),
        half_life_updates=_int(block, "halfLifeUpdates", f"{path}.halfLifeUpdates", low=1, high=1_000_000),
        learning_rate=float(learning_rate),
    )


def _checkpoint(raw: Mapping[str, Any]) -> CheckpointSettings:
    path = "spec.checkpoint"
    if raw.get("claimName") and raw.get("volumeClaimTemplate") is not None:
        raise InvalidSpec(f"{path}: set claimName or volumeClaimTemplate, not both")
    template = raw.get("volumeClaimTemplate")
    if template is not None and not isinstance(template, Mapping):
        raise InvalidSpec(f"{path}.volumeClaimTemplate must be a PersistentVolumeClaim spec (an object)")
    if template is not None and not template.get("accessModes"):
        raise InvalidSpec(
            f"{path}.volumeClaimTemplate needs accessModes, e.g. [ReadWriteMany] (every worker mounts it; "
            "ReadWriteOnce only when all workers share one node)"
        )
    if template is not None and not ((template.get("resources") or {}).get("requests") or {}).get("storage"):
        raise InvalidSpec(f"{path}.volumeClaimTemplate needs resources.requests.storage, e.g. 10Gi")
    return CheckpointSettings(
        claim_name=str(raw["claimName"]) if raw.get("claimName") else None,
        claim_template=template,
        interval_steps=_int(raw, "intervalSteps", f"{path}.intervalSteps", low=0, high=1_000_000),
    )


def _elastic(raw: Mapping[str, Any]) -> ElasticSettings:
    path = "spec.elastic"
    return ElasticSettings(
        min_gain_percent=_int(raw, "minGainPercent", f"{path}.minGainPercent", low=0, high=1000),
        resize_pause_seconds=_int(raw, "resizePauseSeconds", f"{path}.resizePauseSeconds", low=0, high=3600),
        horizon_seconds=_int(raw, "horizonSeconds", f"{path}.horizonSeconds", low=60, high=7 * 24 * 3600),
        pending_timeout_seconds=_int(
            raw, "pendingTimeoutSeconds", f"{path}.pendingTimeoutSeconds", low=10, high=86400
        ),
        provision=_provision(raw.get("provision")),
    )


def _provision(raw: Any) -> ProvisionSettings | None:
    path = "spec.elastic.provision"
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidSpec(f"{path} must be an object such as {{gpuProducts: [NVIDIA-A100-SXM4-40GB]}}")
    products = raw.get("gpuProducts") or []
    if not isinstance(products, list) or not all(isinstance(p, str) and p for p in products):
        raise InvalidSpec(f"{path}.gpuProducts must be a list of nvidia.com/gpu.product values")
    budget = raw.get("budgetPerHour")
    price = None
    if budget is not None:
        price = _decimal(
            budget, f"{path}.budgetPerHour", low=Decimal("0.01"), high=Decimal(10**7), example="40"
        )
    return ProvisionSettings(gpu_products=tuple(products), budget_per_hour=price)


def parse_reinforcement(raw: Mapping[str, Any]) -> ReinforcementSettings:
    """spec.reinforcement, defaults applied (maxPolicyLag's depends on the algorithm)."""
    path, block = "spec.reinforcement", with_defaults(raw, DEFAULTS["reinforcement"])
    for key in ("actors", "learners", "stopping"):
        if not isinstance(block.get(key), Mapping):
            raise InvalidSpec(f"{path}.{key} must be an object, got {block.get(key)!r}")
    actors, learners, stopping = block["actors"], block["learners"], block["stopping"]
    algorithm = _choice(Algorithm, block.get("algorithm"), f"{path}.algorithm")
    lag = DEFAULT_MAX_POLICY_LAG[algorithm]
    if block.get("maxPolicyLag") is not None:
        lag = _int(block, "maxPolicyLag", f"{path}.maxPolicyLag", low=0, high=100_000)
    if algorithm is Algorithm.PPO and lag > PPO_MAX_POLICY_LAG:
        raise InvalidSpec(
            f"PPO is on-policy: keep {path}.maxPolicyLag at {PPO_MAX_POLICY_LAG} or less (2 is a good "
            "start), or use algorithm DQN for larger lags"
        )
    actor_count = _int(actors, "count", f"{path}.actors.count", low=1, high=1024)
    learner_count = _int(learners, "count", f"{path}.learners.count", low=1, high=64)
    if learner_count > actor_count:
        raise InvalidSpec(
            f"{path}.learners.count ({learner_count}) must not exceed actors.count ({actor_count}): every "
            "learner needs at least one actor"
        )
    target = stopping.get("targetReturn")
    if target is not None:
        target = _int(stopping, "targetReturn", f"{path}.stopping.targetReturn", low=-(10**9), high=10**9)
    max_steps = _int(stopping, "maxEnvSteps", f"{path}.stopping.maxEnvSteps", low=0, high=10**12)
    if target is None and max_steps == 0:
        raise InvalidSpec(
            f"{path}.stopping needs a rule: set targetReturn (e.g. 475 for CartPole-v1), maxEnvSteps, or both"
        )
    env = block.get("env")
    if not isinstance(env, str) or not env:
        raise InvalidSpec(f"{path}.env must be a Gymnasium id such as CartPole-v1, got {env!r}")
    try:
        rl = settings_from_mapping(
            {
                "env": env,
                "algorithm": algorithm.value,
                "actors": actor_count,
                "envsPerActor": _int(actors, "envsPerActor", f"{path}.actors.envsPerActor", low=1, high=1024),
                "learners": learner_count,
                "maxPolicyLag": lag,
                "exchangeSteps": _int(block, "exchangeSteps", f"{path}.exchangeSteps", low=1, high=100_000),
                "averageEvery": _int(block, "averageEvery", f"{path}.averageEvery", low=1, high=1_000_000),
                "actorRunAhead": _int(block, "actorRunAhead", f"{path}.actorRunAhead", low=0, high=1_000_000),
                "dependencies": _choice(
                    Dependencies, block.get("dependencies"), f"{path}.dependencies"
                ).value,
                "targetReturn": target,
                "returnEpisodes": _int(
                    stopping, "episodes", f"{path}.stopping.episodes", low=1, high=100_000
                ),
                "maxEnvSteps": max_steps,
            }
        )
    except RlSettingsError as err:  # the checks above mirror these; this keeps the two in step
        raise InvalidSpec(f"{path}: {err}") from err
    return ReinforcementSettings(
        rl=rl, learner_gpus=_int(learners, "gpus", f"{path}.learners.gpus", low=0, high=16)
    )


def _replicas(spec: Mapping[str, Any]) -> tuple[int, int]:
    replicas = spec["replicas"]
    rmin = _int(replicas, "min", "spec.replicas.min", low=1, high=1024)
    rmax = _int(replicas, "max", "spec.replicas.max", low=1, high=1024)
    if rmin > rmax:
        raise InvalidSpec(f"spec.replicas.min ({rmin}) must not exceed spec.replicas.max ({rmax})")
    return rmin, rmax


def _pools(placement: Mapping[str, Any]) -> tuple[str, ...]:
    pools = placement.get("pools") or []
    if not isinstance(pools, list) or not all(isinstance(p, str) and p for p in pools):
        raise InvalidSpec(f"spec.placement.pools must be a list of pool names, got {pools!r}")
    return tuple(pools)


def _model(spec: Mapping[str, Any]) -> dict[str, Any]:
    model = dict(spec.get("model") or {})
    if sum(key in model for key in ("preset", "graph", "configMapRef")) > 1:
        raise InvalidSpec("spec.model: set at most one of preset, graph or configMapRef")
    return model


def parsed(raw: Mapping[str, Any]) -> JobSpec | InvalidSpec:
    """`parse_spec`, with the reason a spec is invalid returned rather than raised."""
    try:
        return parse_spec(raw)
    except InvalidSpec as err:
        return err


def parse_spec(raw: Mapping[str, Any]) -> JobSpec:
    """Validate a TrainingJob spec into a JobSpec, with the defaults applied to whatever is absent."""
    if not isinstance(raw, Mapping):
        raise InvalidSpec("spec is required")
    spec = with_defaults(raw)
    blocks = [k for k, v in DEFAULTS.items() if isinstance(v, Mapping)]
    for key in [*blocks, *(k for k in ("model", "template") if spec.get(k) is not None)]:
        if not isinstance(spec.get(key), Mapping):
            raise InvalidSpec(f"spec.{key} must be an object, got {spec.get(key)!r}")
    mode = _choice(Mode, spec["mode"], "spec.mode")
    reinforcement = parse_reinforcement(spec["reinforcement"]) if mode is Mode.REINFORCEMENT else None
    rmin, rmax = _replicas(spec)
    if "globalBatchSize" not in spec and reinforcement is not None:
        spec["globalBatchSize"] = reinforcement.rl.round_samples  # unused by learners and actors
    if "globalBatchSize" not in spec:
        raise InvalidSpec("spec.globalBatchSize is required: samples per optimizer step across all workers")
    batch = _int(spec, "globalBatchSize", "spec.globalBatchSize", low=1, high=1_048_576)
    balancing = parse_balancing(spec["balancing"])
    if batch < rmax * balancing.min_batch_per_worker:
        raise InvalidSpec(
            f"spec.globalBatchSize ({batch}) is smaller than replicas.max ({rmax}) × "
            f"balancing.minBatchPerWorker ({balancing.min_batch_per_worker}); raise globalBatchSize or lower "
            "replicas.max"
        )
    optimizer = spec["optimizer"]
    lr = _decimal(
        optimizer["learningRate"],
        "spec.optimizer.learningRate",
        low=Decimal("1e-12"),
        high=Decimal(100),
        example="0.1",
    )
    momentum = _decimal(
        optimizer["momentum"],
        "spec.optimizer.momentum",
        low=Decimal(0),
        high=Decimal("0.9999"),
        example="0.9",
    )
    run, servers = spec["runPolicy"], spec["asynchronous"]
    return JobSpec(
        mode=mode,
        replicas_min=rmin,
        replicas_max=rmax,
        gpus_per_worker=_int(spec, "gpusPerWorker", "spec.gpusPerWorker", low=1, high=16),
        global_batch=batch,
        model=_model(spec),
        learning_rate=lr,
        momentum=momentum,
        balancing=balancing,
        momentum_tuning=parse_momentum_tuning(spec["momentumTuning"], target=momentum, learning_rate=lr),
        asynchronous=AsyncSettings(
            parameter_servers=_int(
                servers, "parameterServers", "spec.asynchronous.parameterServers", low=1, high=64
            ),
            max_staleness=_int(
                servers, "maxStaleness", "spec.asynchronous.maxStaleness", low=0, high=100_000
            ),
        ),
        pools=_pools(spec["placement"]),
        run_policy=RunPolicy(
            restart_policy=_choice(RestartPolicy, run["restartPolicy"], "spec.runPolicy.restartPolicy"),
            backoff_limit=_int(run, "backoffLimit", "spec.runPolicy.backoffLimit", low=0, high=100),
            backoff_seconds=_int(run, "backoffSeconds", "spec.runPolicy.backoffSeconds", low=0, high=300),
        ),
        template=_validate_template(spec.get("template"), command_required=reinforcement is None),
        checkpoint=_checkpoint(spec["checkpoint"]),
        elastic=_elastic(spec["elastic"]),
        reinforcement=reinforcement,
    )
