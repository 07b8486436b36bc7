"""Run bench/_tp_worker.py as a job's pods would (one launcher per pod, torchrun inside, loopback only) and
replay the same global batches in one process. Shared by bench/execution.py and the integration tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKER = BENCH / "_tp_worker.py"
LOOPBACK = "127.0.0.1"

sys.path.insert(0, str(BENCH))
from _tp_worker import make_dataset, make_model  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def run_pods(
    out: Path,
    *,
    shares: list[int],
    ranks_per_pod: int,
    plan: dict[str, Any],
    args: list[str],
    checkpoint: Path | None = None,
    timeout_s: float = 600,
    extra_env: dict[str, str] | None = None,
) -> list[int]:
    """Start one `paceline_worker.launch` per pod with the operator's env contract; the pods' exit codes."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACELINE_", "PET_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO / "worker-image"), str(BENCH)]),
            "OMP_NUM_THREADS": "1",
            "GLOO_SOCKET_IFNAME": "lo",
            "PET_NNODES": str(len(shares)),
            "PET_NPROC_PER_NODE": str(ranks_per_pod),
            "PET_MASTER_ADDR": LOOPBACK,
            "PET_MASTER_PORT": str(free_port()),
            "POD_IP": LOOPBACK,
            "PACELINE_LOCAL_RUNTIME": "1",
            "PACELINE_BACKEND": "gloo",
            "PACELINE_METRICS_PORT": "0",
            "PACELINE_PG_TIMEOUT_S": "300",
            "PACELINE_ASSIGNMENT": json.dumps({"version": 1, "batchSizes": shares}),
            "PACELINE_PLAN": json.dumps(plan),
            **({"PACELINE_CHECKPOINT_DIR": str(checkpoint)} if checkpoint else {}),
            **(extra_env or {}),
        }
    )
    command = [sys.executable, "-m", "paceline_worker.launch", "--", sys.executable, str(WORKER)]
    procs = []
    for pod in range(len(shares)):
        with open(out / f"pod{pod}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [*command, "--out", str(out), *args],
                    env={**env, "PET_NODE_RANK": str(pod)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
    try:
        return [p.wait(timeout=timeout_s) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def logs(out: Path) -> str:
    return "\n".join(
        f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in out.glob("pod*.log")
    )


def results(out: Path, world: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def global_batches(ranks: list[dict[str, Any]]) -> list[list[int]]:
    """Per step, the sample indices of all data-parallel groups in order (each group counted once)."""
    by_step: dict[int, dict[int, list[int]]] = {}
    for rank in ranks:
        for r in rank["records"]:
            by_step.setdefault(r["step"], {})[r["dataRank"]] = r["indices"]
    assert sorted(by_step) == list(range(len(by_step))), "every step from 0 recorded"
    return [[i for d in sorted(groups) for i in groups[d]] for _, groups in sorted(by_step.items())]


def replay(
    batches: list[list[int]], *, sizes: list[int], samples: int, lr: float = 0.1, momentum: float = 0.9
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Single-process SGD on the same global batches: final parameters and every step's gradient."""
    model, data = make_model(sizes), make_dataset(samples, sizes[0], sizes[-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    grads = []
    for indices in batches:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.tensors[0][indices]), data.tensors[1][indices])
        loss.backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        optimizer.step()
    return {k: v.detach() for k, v in model.state_dict().items()}, grads


def relative_difference(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    """The largest ‖got − expected‖ / ‖expected‖ over tensors."""
    return max(float((got[k] - v).norm() / v.norm()) for k, v in expected.items())
