"""TrainingJob objects for unit tests."""

from __future__ import annotations

import copy
from typing import Any

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
