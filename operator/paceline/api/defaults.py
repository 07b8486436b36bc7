"""The defaults of every optional TrainingJob spec field — the one place they are written.

The CRD (crds/paceline.dev_trainingjobs.yaml) carries the same values so that the API server fills them in;
a unit test checks that the two agree. `parse_spec` applies these to whatever the API server left out (a spec
that never went through the API server, or an older CRD), so no parser carries a literal default of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

DEFAULTS: dict[str, Any] = {
    "mode": "Synchronous",
    "replicas": {"min": 1, "max": 1},
    "gpusPerWorker": 1,
    "optimizer": {"learningRate": "0.1", "momentum": "0.9"},
    "balancing": {
        "policy": "Dynamic",
        "minGainPercent": 5,
        "cooldownSeconds": 4,
        "halfLifeSeconds": 30,
        "minBatchPerWorker": 1,
        "minShiftPercent": 20,
        "falseAlarmDays": 30,
        "switchCostSteps": 1,
    },
    "momentumTuning": {"policy": "Auto", "floor": "-0.3", "minChange": "0.02", "halfLifeUpdates": 200},
    "asynchronous": {"parameterServers": 1, "maxStaleness": 0},
    "reinforcement": {  # maxPolicyLag's default depends on the algorithm (paceline_worker.rl_settings)
        "env": "CartPole-v1",
        "algorithm": "PPO",
        "actors": {"count": 2, "envsPerActor": 8},
        "learners": {"count": 1, "gpus": 1},
        "exchangeSteps": 64,
        "averageEvery": 10,
        "actorRunAhead": 0,
        "dependencies": "Relaxed",
        "stopping": {"episodes": 20, "maxEnvSteps": 0},
    },
    "placement": {},
    "runPolicy": {"restartPolicy": "ExitCode", "backoffLimit": 3, "backoffSeconds": 5},
    "checkpoint": {"intervalSteps": 100},
    "elastic": {
        "minGainPercent": 10,
        "resizePauseSeconds": 30,
        "horizonSeconds": 1800,
        "pendingTimeoutSeconds": 300,
    },
}
CONFIG_MAP_KEY = "graph.yaml"  # spec.model.configMapRef.key


def with_defaults(spec: Mapping[str, Any], defaults: Mapping[str, Any] = DEFAULTS) -> dict[str, Any]:
    """`spec` with every absent defaulted field filled in (nested blocks merged key by key)."""
    merged: dict[str, Any] = copy.deepcopy(dict(defaults))
    for key, value in spec.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = with_defaults(value, merged[key])
        else:
            merged[key] = value
    return merged
