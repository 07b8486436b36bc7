"""Environment contract of the asynchronous mode (docs/asynchronous.md): roles, PS addresses, PS settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from ..config import (
    DEFAULT_CHECKPOINT_INTERVAL_STEPS,
    DEFAULT_METRICS_PORT,
    ConfigError,
    WorkerConfig,
    config_from_env,
)
from ..wire import PS_PORT, Env, HyperparameterError, HyperparameterUpdate, parse_update

DEFAULT_PS_PORT = PS_PORT
DEFAULT_CONNECT_TIMEOUT_S = 120.0
DEFAULT_LINGER_S = 5.0


class Role(Enum):
    PS = "ps"
    WORKER = "worker"


@dataclass(frozen=True, kw_only=True)
class PsAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_ps_addrs(raw: str) -> list[PsAddress]:
    """'host:port,host:port' (IPv6 as [addr]:port) → addresses; shard i is the i-th entry."""
    addresses = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            raise ConfigError(f"PACELINE_PS_ADDRS={raw!r}: empty entry")
        host, sep, port_text = item.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"PACELINE_PS_ADDRS={raw!r}: {item!r} is not host:port")
        addresses.append(PsAddress(host=host, port=int(port_text)))
    if not addresses:
        raise ConfigError("PACELINE_PS_ADDRS is required: comma-separated host:port of the PS shards")
    return addresses


def role_from_env(env: Mapping[str, str], default: Role) -> Role:
    raw = env.get(Env.ROLE) or default.value
    try:
        return Role(raw)
    except ValueError:
        raise ConfigError(f"PACELINE_ROLE={raw!r}: use ps or worker") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True, kw_only=True)
class PsConfig:
    shard: int
    shards: int
    bind_address: str
    port: int  # worker protocol (TCP)
    metrics_port: int  # HTTP: /metrics, /hyperparameters, /staleness, /status, /healthz
    job: str
    workers: int  # WORLD_SIZE: exit after all of them said goodbye (0: never)
    hyperparameters: HyperparameterUpdate | None
    linger_s: float
    max_staleness: int = 0  # PACELINE_MAX_STALENESS: drop updates staler than this (0: no bound)
    token_file: str | None = None  # PACELINE_TOKEN_FILE: control writes need this token (none: all refused)
    shards_known: bool = False  # PACELINE_PS_ADDRS was given (else `shards` is 1 by default)
    checkpoint_dir: str | None = (
        None  # PACELINE_CHECKPOINT_DIR: ps-shard-<i>-of-<n>.npz there (none: no checkpoints)
    )
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL_STEPS  # every N model versions; 0: only at stop


def ps_config_from_env(env: Mapping[str, str]) -> PsConfig:
    if role_from_env(env, Role.PS) is not Role.PS:
        raise ConfigError("PACELINE_ROLE must be ps for the parameter-server entry point")
    shard = _int(env, Env.PS_SHARD, 0)
    addrs = parse_ps_addrs(env[Env.PS_ADDRS]) if env.get(Env.PS_ADDRS) else []
    if shard < 0 or (addrs and shard >= len(addrs)):
        raise ConfigError(f"PACELINE_PS_SHARD={shard} must lie in [0, {len(addrs) or 'shards'})")
    default_port = addrs[shard].port if addrs else DEFAULT_PS_PORT
    port = _int(env, "PACELINE_PS_PORT", default_port)
    metrics_port = _int(env, Env.METRICS_PORT, DEFAULT_METRICS_PORT)
    for name, value in (("PACELINE_PS_PORT", port), ("PACELINE_METRICS_PORT", metrics_port)):
        if not 0 <= value < 65536:
            raise ConfigError(f"{name}={value} is not a port")
    hyper = None
    if env.get(Env.HYPERPARAMETERS):
        try:
            hyper = parse_update(env[Env.HYPERPARAMETERS])
        except HyperparameterError as exc:
            raise ConfigError(f"PACELINE_HYPERPARAMETERS: {exc}") from exc
    workers = _int(env, Env.WORLD_SIZE, 0)
    linger = _float(env, "PACELINE_PS_LINGER_S", DEFAULT_LINGER_S)
    max_staleness = _int(env, Env.MAX_STALENESS, 0)
    interval = _int(env, Env.CHECKPOINT_INTERVAL_STEPS, DEFAULT_CHECKPOINT_INTERVAL_STEPS)
    if workers < 0 or linger < 0 or max_staleness < 0 or interval < 0:
        raise ConfigError(
            "WORLD_SIZE, PACELINE_PS_LINGER_S, PACELINE_MAX_STALENESS and "
            "PACELINE_CHECKPOINT_INTERVAL_STEPS must be >= 0"
        )
    return PsConfig(
        shard=shard,
        shards=len(addrs) or 1,
        bind_address=env.get("PACELINE_BIND_ADDRESS") or env.get(Env.POD_IP) or "127.0.0.1",
        port=port,
        metrics_port=metrics_port,
        job=env.get(Env.JOB, "local"),
        workers=workers,
        hyperparameters=hyper,
        linger_s=linger,
        max_staleness=max_staleness,
        token_file=env.get(Env.TOKEN_FILE) or None,
        shards_known=bool(addrs),
        checkpoint_dir=env.get(Env.CHECKPOINT_DIR) or None,
        checkpoint_interval=interval,
    )


@dataclass(frozen=True, kw_only=True)
class AsyncWorkerConfig:
    base: WorkerConfig  # rank, world size, job, HTTP endpoint, batch size, seed, simulation
    ps_addrs: tuple[PsAddress, ...]
    connect_timeout_s: float

    @property
    def batch_size(self) -> int:
        return self.base.assignment.batch_sizes[self.base.rank]


def worker_config_from_env(
    env: Mapping[str, str], *, default_batch_size: int | None = None
) -> AsyncWorkerConfig:
    if role_from_env(env, Role.WORKER) is not Role.WORKER:
        raise ConfigError("PACELINE_ROLE must be worker (or unset) for AsyncWorker")
    base = config_from_env(env, default_batch_size=default_batch_size)
    if base.assignment.batch_sizes[base.rank] < 1:
        raise ConfigError(f"PACELINE_ASSIGNMENT: rank {base.rank} needs a batch size >= 1")
    timeout = _float(env, "PACELINE_PS_CONNECT_TIMEOUT_S", DEFAULT_CONNECT_TIMEOUT_S)
    return AsyncWorkerConfig(
        base=base,
        ps_addrs=tuple(parse_ps_addrs(env.get(Env.PS_ADDRS, ""))),
        connect_timeout_s=timeout,
    )
