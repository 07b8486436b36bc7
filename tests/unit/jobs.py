"""TrainingJob objects for unit tests."""

from __future__ import annotations

import copy
from typing import Any

from paceline.plan_types import JobPlan, WorkerPlacement

BASE: dict[str, Any] = {
    "apiVersion": "paceline.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1234", "generation": 1},
    "spec": {
        "mode": "Synchronous",
        "replicas": {"min": 2, "max": 4},
        "gpusPerWorker": 1,
        "globalBatchSize": 128,
        "optimizer": {"learningRate": "0.05", "momentum": "0.9"},
        "balancing": {"minBatchPerWorker": 1},
        "runPolicy": {"restartPolicy": "ExitCode", "backoffLimit": 2, "backoffSeconds": 5},
        "template": {
            "metadata": {"labels": {"team": "vision"}},
            "spec": {
                "containers": [
                    {
                        "name": "trainer",
                        "image": "ghcr.io/example/train:1",
                        "command": ["python", "train.py"],
                        "env": [{"name": "EPOCHS", "value": "3"}],
                    }
                ]
            },
        },
    },
}


def job(**spec_overrides: Any) -> dict[str, Any]:
    """A valid TrainingJob with spec fields overridden."""
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec_overrides)
    return doc


PLAN = JobPlan(
    strategy="data-parallel x3",
    summary="dp x3 (2×H100, 1×T4)",
    reason="3 workers by speed",
    workers=(
        WorkerPlacement(rank=0, node="gpu-h100-0", pool="h100", gpu_product="H100", gpus=1, batch_share=56),
        WorkerPlacement(rank=1, node="gpu-h100-0", pool="h100", gpu_product="H100", gpus=1, batch_share=56),
        WorkerPlacement(rank=2, node="gpu-t4-0", pool="t4", gpu_product="Tesla-T4", gpus=1, batch_share=16),
    ),
)


def pod(
    name: str, *, role: str = "worker", rank: int = 0, attempt: int = 0, plan_hash: str = "", **status: Any
) -> dict[str, Any]:
    """A pod of the `demo` job as the watch cache shows it (status fields as keyword arguments)."""
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {
                "paceline.dev/job": "demo",
                "paceline.dev/role": role,
                "paceline.dev/rank": str(rank),
                "paceline.dev/attempt": str(attempt),
            },
            "annotations": {"paceline.dev/plan-hash": plan_hash},
        },
        "spec": {"nodeName": status.pop("node", None)},
        "status": status,
    }
