"""Paceline worker runtime: DDP training with live, versioned per-rank batch sizes.

from paceline_worker import Worker

with Worker.from_env(model, optimizer, dataset, loss_fn=torch.nn.CrossEntropyLoss()) as w:
    for batch in w.batches(epochs=5):
        loss = w.step(batch)

The names below are imported on first use, so that `paceline_worker.wire` (the operator↔worker contract)
and the other torch-free modules can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .assignment_store import AppliedVersion
    from .config import ConfigError, WorkerConfig, config_from_env
    from .data import Batch
    from .metrics import StepTiming
    from .sampler import GlobalSampler, plan_step, proportional_split
    from .wire import Assignment, AssignmentError, parse_assignment
    from .worker import Worker

_EXPORTS = {
    "AppliedVersion": "assignment_store",
    "Assignment": "wire",
    "AssignmentError": "wire",
    "Batch": "data",
    "ConfigError": "config",
    "GlobalSampler": "sampler",
    "StepTiming": "metrics",
    "Worker": "worker",
    "WorkerConfig": "config",
    "config_from_env": "config",
    "parse_assignment": "wire",
    "plan_step": "sampler",
    "proportional_split": "sampler",
}

__all__ = [
    "AppliedVersion",
    "Assignment",
    "AssignmentError",
    "Batch",
    "ConfigError",
    "GlobalSampler",
    "StepTiming",
    "Worker",
    "WorkerConfig",
    "config_from_env",
    "parse_assignment",
    "plan_step",
    "proportional_split",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
