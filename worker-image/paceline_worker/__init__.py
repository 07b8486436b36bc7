"""Paceline worker runtime: DDP training with live, versioned per-rank batch sizes.

from paceline_worker import Worker

with Worker.from_env(model, optimizer, dataset, loss_fn=torch.nn.CrossEntropyLoss()) as w:
    for batch in w.batches(epochs=5):
        loss = w.step(batch)
"""

from .assignment import Assignment, AssignmentError, parse_assignment
from .assignment_store import AppliedVersion
from .config import ConfigError, WorkerConfig, config_from_env
from .data import Batch
from .metrics import StepTiming
from .sampler import GlobalSampler, plan_step, proportional_split
from .worker import Worker

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
