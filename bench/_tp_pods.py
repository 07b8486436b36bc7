"""Run bench/_tp_worker.py as a job's pods would (one launcher per pod, torchrun inside, loopback only) and
replay the same global batches in one process. Shared by bench/execution.py and the integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from paceline_dev.control_token import control_token_file

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


def pod_env(
    *,
    shares: list[int],
    ranks_per_pod: int,
    plan: dict[str, Any],
    checkpoint: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment the operator gives a job's pods (PET_NODE_RANK left to `start_pod`)."""
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
            "PACELINE_TOKEN_FILE": str(
                control_token_file(Path(tempfile.gettempdir()) / f"paceline-{os.getuid()}")
            ),
            **({"PACELINE_CHECKPOINT_DIR": str(checkpoint)} if checkpoint else {}),
            **(extra_env or {}),
        }
    )
    return env


def start_pod(out: Path, pod: int, env: dict[str, str], args: list[str]) -> subprocess.Popen[bytes]:
    """One pod: `python -m paceline_worker.launch -- python _tp_worker.py ...` (its own process group)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "paceline_worker.launch", "--", sys.executable, str(WORKER)]
    with open(out / f"pod{pod}.log", "ab") as log:
        return subprocess.Popen(
            [*command, "--out", str(out), *args],
            env={"PET_NODE_RANK": str(pod), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill what is still running of the pods we started (their whole process groups)."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


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
    """Start one launcher per pod with the operator's env contract, wait; the pods' exit codes."""
    env = pod_env(
        shares=shares, ranks_per_pod=ranks_per_pod, plan=plan, checkpoint=checkpoint, extra_env=extra_env
    )
    procs = [start_pod(out, pod, env, args) for pod in range(len(shares))]
    try:
        return [p.wait(timeout=timeout_s) for p in procs]
    finally:
        stop(procs)


def logs(out: Path) -> str:
    return "\n".join(
        f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in out.glob("pod*.log")
    )


def results(out: Path, world: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def global_batches(ranks: list[dict[str, Any]]) -> list[list[int]]:
    """Per step, the sample indices of all data-parallel groups in order (each group counted once).

    When a step was trained more than once (ranks that failed after their last checkpoint redo it in the next
    generation or run), the newest run's records are the ones in the model: runs are ordered by generation,
    then by the checkpoint step they resumed from.
    """
    by_step: dict[int, tuple[tuple[int, int], dict[int, list[int]]]] = {}
    for rank in ranks:
        for r in rank["records"]:
            run = (r.get("generation", 0), r.get("resumedFrom", 0))
            known = by_step.get(r["step"])
            if known is None or known[0] < run:
                by_step[r["step"]] = known = (run, {})
            if known[0] == run:
                known[1][r["dataRank"]] = r["indices"]
    assert sorted(by_step) == list(range(len(by_step))), "every step from 0 recorded"
    return [[i for d in sorted(groups) for i in groups[d]] for _, (_, groups) in sorted(by_step.items())]


def sample_accounting(ranks: list[dict[str, Any]], *, samples: int, batch: int) -> tuple[int, int]:
    """Samples skipped and seen twice, summed over the whole epochs of the steps in the final model."""
    batches = global_batches(ranks)
    skipped = duplicated = 0
    per_epoch = samples // batch
    for epoch in range(len(batches) // per_epoch):
        seen = [i for step in batches[epoch * per_epoch : (epoch + 1) * per_epoch] for i in step]
        skipped += samples - len(set(seen))
        duplicated += len(seen) - len(set(seen))
    return skipped, duplicated


def step_records(out: Path) -> list[dict[str, Any]]:
    """Every rank's per-step records of every generation (written as they happen, so crashes keep them)."""
    return [
        {"records": [json.loads(line) for line in path.read_text().splitlines() if line.strip()]}
        for path in sorted(out.glob("rank*.steps.jsonl"))
    ]


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
