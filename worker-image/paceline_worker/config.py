"""The environment contract between the operator (or torchrun) and the worker, parsed into a dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .execution_plan import ExecutionPlan, PlanError, parse_plan
from .topology import Topology
from .wire import METRICS_PORT, Assignment, AssignmentError, Env, parse_assignment

DEFAULT_METRICS_PORT = METRICS_PORT
DEFAULT_CHECKPOINT_INTERVAL_STEPS = 100
DEFAULT_PROCESS_GROUP_TIMEOUT_S = 300.0


class ConfigError(ValueError):
    """A missing or malformed environment variable; the message names it."""


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """Dev/test only: make compute take as long as on a device `speed` times faster than the reference."""

    speed: float
    schedule_path: Path | None
    sample_cost_s: float | None
    exponential: bool = False  # PACELINE_SIM_DISTRIBUTION=exponential: step times vary around the mean


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    job: str
    namespace: str
    bind_address: str
    metrics_port: int
    assignment: Assignment
    checkpoint_dir: Path | None
    checkpoint_interval_steps: int
    backend: str | None  # None: nccl when every local rank has a GPU of its own, else gloo
    device: str | None = None  # None: a GPU when CUDA is available (local rank modulo GPUs), else cpu
    process_group_timeout_s: float
    seed: int
    simulation: SimulationConfig | None
    plan: ExecutionPlan = field(default_factory=ExecutionPlan)
    token_file: str | None = None  # PACELINE_TOKEN_FILE: control writes need this token (none: all refused)

    @property
    def topology(self) -> Topology:
        return Topology(
            rank=self.rank,
            world_size=self.world_size,
            local_world_size=self.local_world_size,
            tensor_parallel=self.plan.tensor_parallel,
        )


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required")
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc


def _assignment(env: Mapping[str, str], workers: int, default_batch_size: int | None) -> Assignment:
    """One batch share per pod (a pod's share is split across its ranks)."""
    raw = env.get(Env.ASSIGNMENT)
    if not raw:
        if default_batch_size is None:
            raise ConfigError(f"{Env.ASSIGNMENT} is not set and no default batch size was given")
        return Assignment(version=0, batch_sizes=(default_batch_size,) * workers)
    try:
        return parse_assignment(raw, world_size=workers)
    except AssignmentError as exc:
        raise ConfigError(f"{Env.ASSIGNMENT}: {exc}") from exc


def _simulation(env: Mapping[str, str]) -> SimulationConfig | None:
    speed = _float(env, "PACELINE_SIM_SPEED")
    if speed is None:
        return None
    if speed <= 0:
        raise ConfigError(f"PACELINE_SIM_SPEED must be > 0, got {speed}")
    sample_cost = _float(env, "PACELINE_SIM_SAMPLE_COST_S")
    if sample_cost is not None and sample_cost < 0:
        raise ConfigError(f"PACELINE_SIM_SAMPLE_COST_S must be >= 0, got {sample_cost}")
    schedule = env.get("PACELINE_SIM_SCHEDULE")
    distribution = env.get("PACELINE_SIM_DISTRIBUTION") or "fixed"
    if distribution not in ("fixed", "exponential"):
        raise ConfigError(f"PACELINE_SIM_DISTRIBUTION={distribution!r}: use fixed or exponential")
    return SimulationConfig(
        speed=speed,
        schedule_path=Path(schedule) if schedule else None,
        sample_cost_s=sample_cost,
        exponential=distribution == "exponential",
    )


def config_from_env(env: Mapping[str, str], *, default_batch_size: int | None = None) -> WorkerConfig:
    """Read the worker's environment (see docs/worker.md for the contract)."""
    rank = _int(env, Env.RANK, 0)
    world_size = _int(env, Env.WORLD_SIZE, 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    metrics_port = _int(env, Env.METRICS_PORT, DEFAULT_METRICS_PORT)
    if not 0 <= metrics_port < 65536:
        raise ConfigError(f"PACELINE_METRICS_PORT={metrics_port} is not a port")
    backend = env.get("PACELINE_BACKEND") or None
    if backend not in (None, "gloo", "nccl"):
        raise ConfigError(f"PACELINE_BACKEND={backend!r}: use gloo or nccl")
    device = env.get("PACELINE_DEVICE") or None
    if device not in (None, "cpu", "cuda"):
        raise ConfigError(f"PACELINE_DEVICE={device!r}: use cpu or cuda")
    interval = _int(env, "PACELINE_CHECKPOINT_INTERVAL_STEPS", DEFAULT_CHECKPOINT_INTERVAL_STEPS)
    if interval < 0:
        raise ConfigError("PACELINE_CHECKPOINT_INTERVAL_STEPS must be >= 0 (0 = only at SIGTERM)")
    timeout = _float(env, "PACELINE_PG_TIMEOUT_S") or DEFAULT_PROCESS_GROUP_TIMEOUT_S
    checkpoint_dir = env.get(Env.CHECKPOINT_DIR)
    local_world_size = _int(env, Env.LOCAL_WORLD_SIZE, 1)
    if local_world_size < 1 or world_size % local_world_size:
        raise ConfigError(f"WORLD_SIZE={world_size} is not a multiple of LOCAL_WORLD_SIZE={local_world_size}")
    try:
        plan = parse_plan(env.get(Env.PLAN))
        plan.check_world(local_world_size=local_world_size)
    except PlanError as exc:
        raise ConfigError(f"PACELINE_PLAN: {exc}") from exc
    return WorkerConfig(
        rank=rank,
        world_size=world_size,
        local_rank=_int(env, Env.LOCAL_RANK, 0),
        local_world_size=local_world_size,
        plan=plan,
        master_addr=env.get(Env.MASTER_ADDR, "127.0.0.1"),
        master_port=_int(env, Env.MASTER_PORT, 29500),
        job=env.get(Env.JOB, "local"),
        namespace=env.get(Env.NAMESPACE, ""),
        bind_address=env.get("PACELINE_BIND_ADDRESS") or env.get(Env.POD_IP) or "127.0.0.1",
        metrics_port=metrics_port,
        assignment=_assignment(env, world_size // local_world_size, default_batch_size),
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        checkpoint_interval_steps=interval,
        backend=backend,
        device=device,
        process_group_timeout_s=timeout,
        seed=_int(env, "PACELINE_SEED", 0),
        simulation=_simulation(env),
        token_file=env.get(Env.TOKEN_FILE) or None,
    )
