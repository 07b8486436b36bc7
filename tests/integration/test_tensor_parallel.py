"""Tensor parallel inside pods, data parallel across them: 2 pods x 2 ranks (torchrun through the pod
launcher), the plan's Linear layers split colwise/rowwise, unequal per-pod shares. The trained parameters
equal single-process SGD (with momentum) on the same global batches, through a same-step share switch and a
checkpoint/resume; split layers hold 1/tp of their parameters on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import LOOPBACK, REPO, free_port

HARNESS = Path(__file__).with_name("tp_harness.py")
TP = 2
PLAN = {
    "tensorParallel": TP,
    "modules": {
        "0": {"kind": "linear", "style": "colwise", "shape": [16, 6], "output": "shard"},
        "2": {"kind": "linear", "style": "rowwise", "shape": [12, 16], "input": "shard"},
        "4": {"kind": "linear", "style": "colwise", "shape": [4, 12]},
    },
}
LR, MOMENTUM, SAMPLES = 0.1, 0.9, 120


def run_pods(
    out: Path, *, shares: list[int], args: list[str], checkpoint: Path, plan: Any = PLAN
) -> list[int]:
    """Start one launcher per pod (as the operator's pods do), wait, return the pods' exit codes."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACELINE_", "PET_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO / "worker-image"), str(HARNESS.parent)]),
            "OMP_NUM_THREADS": "1",
            "GLOO_SOCKET_IFNAME": "lo",
            "PET_NNODES": str(len(shares)),
            "PET_NPROC_PER_NODE": "2",
            "PET_MASTER_ADDR": LOOPBACK,
            "PET_MASTER_PORT": str(free_port()),
            "POD_IP": LOOPBACK,
            "PACELINE_BACKEND": "gloo",
            "PACELINE_METRICS_PORT": "0",
            "PACELINE_PG_TIMEOUT_S": "120",
            "PACELINE_CHECKPOINT_DIR": str(checkpoint),
            "PACELINE_ASSIGNMENT": json.dumps({"version": 1, "batchSizes": shares}),
            "PACELINE_PLAN": json.dumps(plan),
        }
    )
    command = [sys.executable, "-m", "paceline_worker.launch", "--", sys.executable, str(HARNESS)]
    procs = []
    for pod in range(len(shares)):
        log = open(out / f"pod{pod}.log", "wb")  # noqa: SIM115  (closed after the child starts)
        procs.append(
            subprocess.Popen(
                [*command, "--out", str(out), *args],
                env={**env, "PET_NODE_RANK": str(pod)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
        log.close()
    try:
        return [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def logs(out: Path) -> str:
    return "\n".join(
        f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in out.glob("pod*.log")
    )


def replay(records: list[list[dict[str, Any]]], steps: int) -> dict[str, torch.Tensor]:
    """Single-process SGD on the global batches the ranks took (data ranks in order)."""
    sys.path.insert(0, str(HARNESS.parent))
    from tp_harness import make_dataset, make_model

    model, data = make_model(), make_dataset(SAMPLES)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    by_step: dict[int, dict[int, list[int]]] = {}
    for rank_records in records:
        for r in rank_records:
            by_step.setdefault(r["step"], {})[r["dataRank"]] = r["indices"]
    assert sorted(by_step) == list(range(steps))
    for step in range(steps):
        indices = [i for d in sorted(by_step[step]) for i in by_step[step][d]]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            model(data.tensors[0][indices]), data.tensors[1][indices]
        ).backward()
        optimizer.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def assert_same(final: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    worst = 0.0
    for name, value in expected.items():
        relative = float((final[name] - value).norm() / value.norm())
        worst = max(worst, relative)
        assert relative <= 1e-5, f"{name}: relative difference {relative:.2e}"
    return worst


def results(out: Path, world: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.integration
def test_hybrid_equals_single_process_sgd_and_splits_parameters(tmp_path: Path) -> None:
    out = tmp_path / "run"
    codes = run_pods(out, shares=[5, 9], args=["--max-steps", "20"], checkpoint=tmp_path / "ckpt")
    assert codes == [0, 0], logs(out)
    ranks = results(out, 4)
    assert [(r["localRank"], r["localWorldSize"]) for r in ranks] == [(0, 2), (1, 2), (0, 2), (1, 2)]
    for r in ranks:
        assert r["placements"] == {"0": "shard(0)/2", "2": "shard(1)/2", "4": "shard(0)/2"}
        assert r["splitBytes"]["held"] <= r["splitBytes"]["full"] / TP + 4 * 12, r["splitBytes"]
    # tensor-parallel peers train on the same samples; the two data-parallel groups on 5 and 9 of them
    assert ranks[0]["records"] == ranks[1]["records"] and ranks[2]["records"] == ranks[3]["records"]
    assert {len(rec["indices"]) for rec in ranks[0]["records"]} <= {5, 3}  # 120 = 8 x 14 + 8: last step 3/5
    assert_same(torch.load(out / "final.pt"), replay([ranks[0]["records"], ranks[2]["records"]], 20))


@pytest.mark.integration
def test_hybrid_share_switch_and_resume_keep_the_sgd_trajectory(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    first = tmp_path / "first"
    switch = ["--switch-at", "4", "--switch-to", "11,3"]
    assert run_pods(first, shares=[5, 9], args=["--max-steps", "10", *switch], checkpoint=checkpoint) == [
        0,
        0,
    ], logs(first)
    second = tmp_path / "second"
    assert run_pods(second, shares=[5, 9], args=["--max-steps", "20"], checkpoint=checkpoint) == [0, 0], logs(
        second
    )
    one, two = results(first, 4), results(second, 4)
    versions = [r["version"] for r in one[0]["records"]]
    assert versions == [1] * 5 + [2] * 5, "all ranks switch at the step after the offer"
    assert [r["step"] for r in two[0]["records"]] == list(range(10, 20)), "resumed at step 10"
    assert {r["version"] for r in two[0]["records"]} == {2}, "the switched shares survive the restart"
    records = [one[0]["records"] + two[0]["records"], one[2]["records"] + two[2]["records"]]
    assert_same(torch.load(second / "final.pt"), replay(records, 20))
