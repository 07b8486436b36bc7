"""The operator↔worker wire contract: environment names, ports and paths, the versioned assignment, the
parameter servers' hyperparameters, the staleness log and the metric names both sides rely on.

Standard library only: the operator imports this module without torch. The sharding map (PACELINE_PLAN)
lives next to it in `paceline_worker.execution_plan`, which is torch-free as well.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

METRICS_PORT = 9400  # every worker pod and parameter server: /metrics and the control endpoints
LAUNCHER_PORT = 9401  # every synchronous worker pod's launcher: GET/PUT /generation
PS_PORT = 29600  # parameter servers' TCP update protocol
# A worker's exit code for a transient failure it cannot repair itself (EX_TEMPFAIL of sysexits.h): an
# asynchronous worker whose parameter server went away and did not come back at its address; a rank of an
# elastic synchronous job whose peer was lost (its launcher then waits for the next generation instead of
# failing the pod). Under restartPolicy ExitCode the operator retries it like a signal's 128+n.
EXIT_TEMPORARY_FAILURE = 75

# Control writes (every PUT) carry the job's token: `Authorization: Bearer <token>`. The operator keeps it in
# the Secret `<job>-control-token` (key `token`), mounted into every pod of the job at TOKEN_MOUNT.
TOKEN_KEY = "token"
TOKEN_MOUNT = "/var/run/secrets/paceline.dev/control"
TOKEN_FILE = f"{TOKEN_MOUNT}/{TOKEN_KEY}"
AUTHORIZATION = "Authorization"
BEARER = "Bearer "


def authorization(token: str) -> dict[str, str]:
    """The header of a control write carrying `token`."""
    return {AUTHORIZATION: f"{BEARER}{token}"}


class Route(StrEnum):
    """HTTP paths of the worker (rank 0 of a pod) and the parameter-server endpoints."""

    METRICS = "/metrics"
    HEALTHZ = "/healthz"
    STATUS = "/status"
    ASSIGNMENT = "/assignment"  # workers: GET, PUT an Assignment
    HYPERPARAMETERS = "/hyperparameters"  # parameter servers: GET, PUT a HyperparameterUpdate
    STALENESS = "/staleness"  # parameter servers: GET ?after=N → a staleness page
    GENERATION = "/generation"  # worker pods' launcher: GET, PUT a Generation (resize in place)
    RL_TRAJECTORIES = "/rl/trajectories"  # RL learners: PUT a trajectory batch (npz) from an actor
    RL_POLICY = "/rl/policy"  # RL learners: GET ?after=V[&wait=S] → the newest parameters (npz)
    RL_PEER = "/rl/peer"  # RL learners: GET ?round=N[&wait=S] → parameters at an averaging round (npz)


class Env(StrEnum):
    """Environment variables the operator sets and the worker runtime reads."""

    # torch.distributed (asynchronous pods) and torchrun's launcher (synchronous pods)
    MASTER_ADDR = "MASTER_ADDR"
    MASTER_PORT = "MASTER_PORT"
    RANK = "RANK"
    WORLD_SIZE = "WORLD_SIZE"
    LOCAL_RANK = "LOCAL_RANK"
    LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
    GROUP_RANK = "GROUP_RANK"
    NNODES = "PET_NNODES"
    NODE_RANK = "PET_NODE_RANK"
    NPROC_PER_NODE = "PET_NPROC_PER_NODE"
    LAUNCH_MASTER_ADDR = "PET_MASTER_ADDR"
    LAUNCH_MASTER_PORT = "PET_MASTER_PORT"
    # Paceline
    JOB = "PACELINE_JOB"
    NAMESPACE = "PACELINE_NAMESPACE"
    MODE = "PACELINE_MODE"
    ATTEMPT = "PACELINE_ATTEMPT"
    GLOBAL_BATCH = "PACELINE_GLOBAL_BATCH"
    ASSIGNMENT = "PACELINE_ASSIGNMENT"
    PLAN = "PACELINE_PLAN"
    METRICS_PORT = "PACELINE_METRICS_PORT"
    CHECKPOINT_DIR = "PACELINE_CHECKPOINT_DIR"
    CHECKPOINT_INTERVAL_STEPS = "PACELINE_CHECKPOINT_INTERVAL_STEPS"
    GENERATION = "PACELINE_GENERATION"
    LAUNCHER_PORT = "PACELINE_LAUNCHER_PORT"
    RESIZE_GRACE_S = "PACELINE_RESIZE_GRACE_S"
    GENERATION_FILE = "PACELINE_GENERATION_FILE"  # the launcher's newest generation, read by its ranks
    ROLE = "PACELINE_ROLE"
    PS_ADDRS = "PACELINE_PS_ADDRS"
    PS_SHARD = "PACELINE_PS_SHARD"
    HYPERPARAMETERS = "PACELINE_HYPERPARAMETERS"
    MAX_STALENESS = "PACELINE_MAX_STALENESS"  # PS: drop updates older than this many versions (0: no bound)
    CURVATURE_EVERY = "PACELINE_CURVATURE_EVERY"  # async worker: top-Hessian estimate every N steps (0: off)
    TOKEN_FILE = "PACELINE_TOKEN_FILE"  # the control token's file (writes without that token are refused)
    RL_SETTINGS = "PACELINE_RL"  # reinforcement mode: the job's settings (paceline_worker.rl_settings), JSON
    RL_INDEX = "PACELINE_RL_INDEX"  # reinforcement mode: this actor's or learner's index
    RL_LEARNERS = "PACELINE_RL_LEARNERS"  # reinforcement mode: host:port of every learner, in index order
    POD_IP = "POD_IP"
    POD_NAME = "POD_NAME"
    NODE_NAME = "NODE_NAME"


class Label(StrEnum):
    """Labels of the workers' and parameter servers' metrics."""

    JOB = "trainingjob"  # not "job": Prometheus sets job (and namespace) on every scraped series
    RANK = "rank"
    PHASE = "phase"
    SHARD = "shard"
    WORKER = "worker"
    REASON = "reason"  # why a control write was refused: missing, wrong, unconfigured


PHASES = ("data", "compute", "communication")  # values of Label.PHASE


class WorkerMetric(StrEnum):
    """Worker metric families (counters are exposed with a `_total` suffix, histograms `_sum`/`_count`)."""

    PHASE_SECONDS = "paceline_worker_phase_seconds"  # histogram per phase
    LAST_PHASE_SECONDS = "paceline_worker_last_phase_seconds"
    STEP_SECONDS = "paceline_worker_step_seconds"  # histogram
    SAMPLES_PER_SECOND = "paceline_worker_samples_per_second"
    COMPUTE_SAMPLES_PER_SECOND = "paceline_worker_compute_samples_per_second"
    BATCH_SIZE = "paceline_worker_batch_size"
    GLOBAL_BATCH_SIZE = "paceline_worker_global_batch_size"
    ASSIGNMENT_VERSION = "paceline_worker_assignment_version"
    ASSIGNMENT_APPLIED_STEP = "paceline_worker_assignment_applied_step"
    ASSIGNMENT_APPLIED_TIME = "paceline_worker_assignment_applied_timestamp_seconds"
    STEPS = "paceline_worker_steps"  # counter
    SAMPLES = "paceline_worker_samples"  # counter
    LOSS = "paceline_worker_loss"
    EPOCH = "paceline_worker_epoch"
    SIMULATED_SLOWDOWN = "paceline_worker_simulated_slowdown_ratio"
    CURVATURE = "paceline_worker_curvature"  # top Hessian eigenvalue estimate (0 until the first estimate)
    REFUSED_WRITES = "paceline_worker_refused_writes"  # counter per reason: control writes without the token
    GPU_UTILIZATION = "paceline_worker_gpu_utilization_ratio"  # NVML, only where a GPU is found
    GPU_MEMORY_USED = "paceline_worker_gpu_memory_used_bytes"
    GPU_MEMORY_TOTAL = "paceline_worker_gpu_memory_total_bytes"  # the worker's memory bound uses it


class PsMetric(StrEnum):
    """Parameter-server metric families."""

    STALENESS = "paceline_ps_update_staleness"  # histogram per worker
    UPDATES = "paceline_ps_updates"  # counter per worker
    MODEL_VERSION = "paceline_ps_model_version"
    MOMENTUM = "paceline_ps_momentum"
    LEARNING_RATE = "paceline_ps_learning_rate"
    HYPERPARAMETERS_VERSION = "paceline_ps_hyperparameters_version"
    PARAMETERS = "paceline_ps_parameters"
    CONNECTED_WORKERS = "paceline_ps_connected_workers"
    DROPPED = "paceline_ps_dropped_updates"  # counter per worker: staleness above maxStaleness
    REFUSED_WRITES = "paceline_ps_refused_writes"  # counter per reason: control writes without the token


LAUNCHER_REFUSED_WRITES = "paceline_launcher_refused_writes"  # the launcher's (port 9401) refusals


class RlMetric(StrEnum):
    """Reinforcement-mode metric families (learners and actors)."""

    ENV_STEPS = "paceline_rl_env_steps"  # counter: environment steps received (learner) or taken (actor)
    UPDATES = "paceline_rl_updates"  # counter: learner gradient steps
    POLICY_VERSION = "paceline_rl_policy_version"
    MEAN_RETURN = "paceline_rl_mean_return"  # over the stopping rule's last N episodes
    BEST_RETURN = "paceline_rl_best_return"
    POLICY_LAG = "paceline_rl_policy_lag"  # histogram: versions between a sample's policy and the learner's
    DROPPED_SAMPLES = "paceline_rl_dropped_samples"  # counter: older than maxPolicyLag
    REFUSED_WRITES = "paceline_rl_refused_writes"  # counter per reason: batches sent without the token


class AssignmentError(ValueError):
    """An assignment that cannot be used; the message says what to fix."""


class HyperparameterError(ValueError):
    """A malformed hyperparameter update; the message says what to fix."""


def _compact(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _object(text: str | bytes, error: type[ValueError]) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise error("must be a JSON object")
    return doc


def _version(value: object, error: type[ValueError]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"version must be an integer >= 0, got {value!r}")
    return value


def _optional_number(data: Mapping[str, Any], key: str, error: type[ValueError]) -> float | None:
    """A finite number or null; learningRate must be > 0 and momentum in (-1, 1)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise error(f"{key} must be a finite number or null, got {value!r}")
    if key == "learningRate" and value <= 0:
        raise error(f"learningRate must be > 0, got {value}")
    if key == "momentum" and not -1.0 < value < 1.0:
        raise error(f"momentum must lie in (-1, 1), got {value}")
    return float(value)


def _only(data: Mapping[str, Any], allowed: frozenset[str], error: type[ValueError]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise error(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """Per-pod batch shares plus optimizer settings (None keeps the one in force), identified by a version.

    Wire form: {"version": 3, "batchSizes": [40, 24], "learningRate": 0.05 | null, "momentum": 0.9 | null}.
    """

    version: int
    batch_sizes: tuple[int, ...]
    learning_rate: float | None = None
    momentum: float | None = None

    FIELDS = frozenset({"version", "batchSizes", "learningRate", "momentum"})

    @property
    def global_batch_size(self) -> int:
        return sum(self.batch_sizes)

    @property
    def world_size(self) -> int:
        return len(self.batch_sizes)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "batchSizes": list(self.batch_sizes),
            "learningRate": self.learning_rate,
            "momentum": self.momentum,
        }

    def to_json(self) -> str:
        """PACELINE_ASSIGNMENT, the control ConfigMap's assignment.json and PUT /assignment."""
        return _compact(self.to_json_dict())


def _batch_sizes(raw: object, world_size: int | None) -> tuple[int, ...]:
    if not isinstance(raw, list):
        raise AssignmentError(f"batchSizes must be a list of integers, got {raw!r}")
    for i, b in enumerate(raw):
        if isinstance(b, bool) or not isinstance(b, int):
            raise AssignmentError(f"batchSizes[{i}] must be an integer, got {b!r}")
    if world_size is not None and len(raw) != world_size:
        raise AssignmentError(f"batchSizes has {len(raw)} entries but the job has {world_size} worker pods")
    negative = [i for i, b in enumerate(raw) if b < 0]
    if negative:
        raise AssignmentError(f"batchSizes must be >= 0; negative at rank(s) {negative}")
    if sum(raw) <= 0:
        raise AssignmentError("batchSizes must sum to a positive global batch size")
    return tuple(raw)


def assignment_from_mapping(data: Mapping[str, Any], *, world_size: int | None) -> Assignment:
    """Validate a decoded assignment (against the number of pods, unless None); raises AssignmentError."""
    _only(data, Assignment.FIELDS, AssignmentError)
    if "version" not in data or "batchSizes" not in data:
        raise AssignmentError("an assignment needs 'version' and 'batchSizes'")
    return Assignment(
        version=_version(data["version"], AssignmentError),
        batch_sizes=_batch_sizes(data["batchSizes"], world_size),
        learning_rate=_optional_number(data, "learningRate", AssignmentError),
        momentum=_optional_number(data, "momentum", AssignmentError),
    )


def parse_assignment(text: str | bytes, *, world_size: int | None) -> Assignment:
    """Parse and validate assignment JSON; raises AssignmentError with a readable message."""
    return assignment_from_mapping(_object(text, AssignmentError), world_size=world_size)


@dataclass(frozen=True, kw_only=True)
class HyperparameterUpdate:
    """A parameter server's new update-rule settings; None leaves that value as it is.

    Wire form (PACELINE_HYPERPARAMETERS, PUT /hyperparameters):
    {"version": 2, "learningRate": 0.05 | null, "momentum": 0.4 | null}.
    """

    version: int
    learning_rate: float | None
    momentum: float | None

    FIELDS = frozenset({"version", "learningRate", "momentum"})

    def to_json_dict(self) -> dict[str, Any]:
        return {"version": self.version, "learningRate": self.learning_rate, "momentum": self.momentum}

    def to_json(self) -> str:
        return _compact(self.to_json_dict())


def update_from_mapping(data: Mapping[str, Any]) -> HyperparameterUpdate:
    """Validate a decoded update; raises HyperparameterError."""
    _only(data, HyperparameterUpdate.FIELDS, HyperparameterError)
    return HyperparameterUpdate(
        version=_version(data.get("version"), HyperparameterError),
        learning_rate=_optional_number(data, "learningRate", HyperparameterError),
        momentum=_optional_number(data, "momentum", HyperparameterError),
    )


def parse_update(text: str | bytes) -> HyperparameterUpdate:
    """Parse and validate hyperparameter JSON; raises HyperparameterError."""
    return update_from_mapping(_object(text, HyperparameterError))


def staleness_page(
    *, shard: int, version: int, after: int, updates: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """GET /staleness?after=N: the applied updates from index N on (each with its "index" and "staleness"
    τ, plus whatever else the shard records) and the index to ask for next."""
    return {
        "shard": shard,
        "version": version,
        "next": int(updates[-1]["index"]) + 1 if updates else max(after, 0),
        "updates": list(updates),
    }


def parse_staleness_page(doc: Mapping[str, Any], *, after: int) -> tuple[list[int], int]:
    """(τ values, next index) of a staleness page; raises ValueError when it is not one."""
    updates = doc.get("updates")
    if not isinstance(updates, list):
        raise ValueError("a staleness page needs an 'updates' list")
    try:
        return [int(u["staleness"]) for u in updates], int(doc.get("next", after))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed staleness page: {exc}") from exc


# -- generations: which pods train together, in what order (resizing in place) ------------------------------
# The operator decides a new generation when the job grows or shrinks; each surviving pod's launcher receives
# it (PUT /generation) and hands it to its running ranks (data parallel: they regroup at a step boundary) or
# restarts them with it (split modules), so surviving pods are never recreated. Wire form:
#   {"generation": 3, "nnodes": 2, "nodeRank": 1, "masterAddr": "job-worker-0.job.ns.svc.cluster.local",
#    "masterPort": 29531, "assignment": {"version": 9, "batchSizes": [40, 24]}, "plan": {"tensorParallel": 1}}


class GenerationError(ValueError):
    """A malformed generation; the message says which field."""


@dataclass(frozen=True, kw_only=True)
class Generation:
    generation: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    assignment: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The launcher (torchrun) and worker variables of this generation."""
        env: dict[str, str] = {
            Env.GENERATION: str(self.generation),
            Env.NNODES: str(self.nnodes),
            Env.NODE_RANK: str(self.node_rank),
            Env.LAUNCH_MASTER_ADDR: self.master_addr,
            Env.LAUNCH_MASTER_PORT: str(self.master_port),
        }
        if self.assignment:
            env[Env.ASSIGNMENT] = _compact(self.assignment)
        if self.plan:
            env[Env.PLAN] = _compact(self.plan)
        return env

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "nnodes": self.nnodes,
            "nodeRank": self.node_rank,
            "masterAddr": self.master_addr,
            "masterPort": self.master_port,
            "assignment": dict(self.assignment),
            "plan": dict(self.plan),
        }


def _int(doc: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int:
    value = doc.get(key)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise GenerationError(f"{key} must be an integer {bound}, got {value!r}")
    return value


def generation_from_mapping(doc: Mapping[str, Any]) -> Generation:
    """Validate the wire form."""
    nnodes = _int(doc, "nnodes", 1)
    master = doc.get("masterAddr")
    if not isinstance(master, str) or not master:
        raise GenerationError("masterAddr must be a non-empty host name or address")
    for key in ("assignment", "plan"):
        if not isinstance(doc.get(key) or {}, Mapping):
            raise GenerationError(f"{key} must be an object")
    return Generation(
        generation=_int(doc, "generation", 0),
        nnodes=nnodes,
        node_rank=_int(doc, "nodeRank", 0, nnodes - 1),
        master_addr=master,
        master_port=_int(doc, "masterPort", 1, 65535),
        assignment=dict(doc.get("assignment") or {}),
        plan=dict(doc.get("plan") or {}),
    )


def parse_generation(text: str | bytes) -> Generation:
    return generation_from_mapping(_object(text, GenerationError))


def generation_from_env(env: Mapping[str, str]) -> Generation:
    """The pod's first generation, from the variables the operator put in its spec."""
    try:
        return Generation(
            generation=int(env.get(Env.GENERATION) or 0),
            nnodes=int(env.get(Env.NNODES) or 1),
            node_rank=int(env.get(Env.NODE_RANK) or 0),
            master_addr=env.get(Env.LAUNCH_MASTER_ADDR) or "127.0.0.1",
            master_port=int(env.get(Env.LAUNCH_MASTER_PORT) or 29500),
        )
    except ValueError as exc:
        raise GenerationError(f"launcher environment: {exc}") from exc
