"""TrainingJob documents for the local cluster: what e2e tests, benchmarks and the fault catalogue apply."""

from __future__ import annotations

from typing import Any

WORKER_IMAGE = "paceline/worker:dev"


def training_job(
    name: str, *, command: list[str], replicas: tuple[int, int] = (2, 3), **spec: Any
) -> dict[str, Any]:
    """A TrainingJob whose workers run `command` (as local processes under the process runtime)."""
    doc: dict[str, Any] = {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "replicas": {"min": replicas[0], "max": replicas[1]},
            "globalBatchSize": 64,
            "template": {
                "spec": {"containers": [{"name": "trainer", "image": WORKER_IMAGE, "command": command}]}
            },
        },
    }
    doc["spec"].update(spec)
    return doc


def layer_graph(layers: int, *, fan_in: int = 1) -> dict[str, Any]:
    """An inline layer graph of `layers` small GEMMs, each reading the outputs of the `fan_in` before it."""
    gemm = {"batch": [], "m": ["b"], "n": ["n"], "k": ["k"]}
    rows = []
    for i in range(layers):
        inputs = [{"from": f"l{j}", "axes": ["b", "k"]} for j in range(max(0, i - fan_in), i)]
        rows.append(
            {
                "name": f"l{i}",
                "op": "gemm",
                "dims": {"b": 64, "n": 64, "k": 64},
                "gemm": gemm,
                "output": ["b", "n"],
                "inputs": inputs or [{"axes": ["b", "k"]}],
                "weights": ["k", "n"],
            }
        )
    return {"name": f"chain{layers}x{fan_in}", "batchDim": "b", "layers": rows}


def recorded_job(
    name: str, *, steps: int, samples: int, batch: int, workers: int = 2, step_sleep: float = 0.3
) -> dict[str, Any]:
    """`workers` one-rank workers training bench/_tp_worker.py's MLP for `steps` steps; every rank records
    each step's sample indices under `records/` of the job's checkpoint volume (a claim template the
    operator creates); a checkpoint every 4 steps."""
    command = ["python", "bench/_tp_worker.py", "--out", "$(PACELINE_CHECKPOINT_DIR)/records"]
    command += ["--samples", str(samples), "--max-steps", str(steps), "--step-sleep", str(step_sleep)]
    return training_job(
        name,
        command=command,
        replicas=(workers, workers),
        globalBatchSize=batch,
        balancing={"policy": "Static"},
        checkpoint={
            "volumeClaimTemplate": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
            "intervalSteps": 4,
        },
    )
