"""Asynchronous training: parameter-server shards + workers that never wait for each other.

    with AsyncWorker.from_env(model, dataset, loss_fn=nn.CrossEntropyLoss(), learning_rate=0.05) as w:
        w.train(epochs=5)

The PS is `python -m paceline_worker.asynchronous.ps`; see docs/asynchronous.md.
"""

from ..wire import HyperparameterUpdate, parse_update
from .client import PsError, PushResult, ShardConnection
from .config import (
    AsyncWorkerConfig,
    PsAddress,
    PsConfig,
    parse_ps_addrs,
    ps_config_from_env,
    worker_config_from_env,
)
from .hyperparameters import Hyperparameters, HyperparameterStore
from .shard import AppliedUpdate, ParameterShard
from .sharding import ParameterSpec, ShardLayout, assign_shards
from .worker import AsyncWorker, worker_indices

__all__ = [
    "AppliedUpdate",
    "AsyncWorker",
    "AsyncWorkerConfig",
    "HyperparameterStore",
    "HyperparameterUpdate",
    "Hyperparameters",
    "ParameterShard",
    "ParameterSpec",
    "PsAddress",
    "PsConfig",
    "PsError",
    "PushResult",
    "ShardConnection",
    "ShardLayout",
    "assign_shards",
    "parse_ps_addrs",
    "parse_update",
    "ps_config_from_env",
    "worker_config_from_env",
    "worker_indices",
]
