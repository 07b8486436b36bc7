"""SIGTERM -> finish the step -> checkpoint -> exit 0; a restarted job resumes at the same step with the same
model, optimiser state, sampler position and assignment, as if it had never stopped."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

SAMPLES = 37
START = {"version": 1, "batchSizes": [4, 4], "learningRate": None, "momentum": None}
UPDATE = {"version": 2, "batchSizes": [3, 5], "learningRate": 0.05, "momentum": 0.8}
MAX_STEPS = 60
ARGS = [
    "--samples",
    str(SAMPLES),
    "--max-steps",
    str(MAX_STEPS),
    "--lr",
    "0.1",
    "--momentum",
    "0.5",
    "--dtype",
    "float64",
]


def _wait_for_step(group: Any, step: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group.http("GET", 0, "/assignment")[1]["step"] >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached\n{group.logs()}")


def _checkpoint(directory: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(directory / "paceline-checkpoint.pt", weights_only=True)
    return state


@pytest.mark.integration
def test_sigterm_checkpoint_and_resume_continue_the_same_training(
    launch: Any, toy_task: Any, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    first = launch(
        "first",
        assignment=START,
        args=ARGS,
        env={
            "PACELINE_CHECKPOINT_DIR": str(checkpoints),
            "PACELINE_CHECKPOINT_INTERVAL_STEPS": "0",
            "PACELINE_SIM_SPEED": "1",
            "PACELINE_SIM_SAMPLE_COST_S": "0.004",
        },
    )
    _wait_for_step(first, 3)
    assert first.http("PUT", 0, "/assignment", UPDATE)[0] == 202
    _wait_for_step(first, 8)
    first.signal(1, signal.SIGTERM)  # one pod preempted: every rank stops at the same step
    assert first.wait() == [0, 0], first.logs()
    before = [first.result(rank) for rank in (0, 1)]
    stopped_at = before[0]["finalStep"]
    assert [r["stoppedBySignal"] for r in before] == [True, True]
    assert before[1]["finalStep"] == stopped_at < MAX_STEPS
    assert _checkpoint(checkpoints)["step"] == stopped_at

    second = launch(
        "second",
        assignment=START,
        args=ARGS,
        env={"PACELINE_CHECKPOINT_DIR": str(checkpoints), "PACELINE_CHECKPOINT_INTERVAL_STEPS": "25"},
    )
    assert second.wait() == [0, 0], second.logs()
    after = [second.result(rank) for rank in (0, 1)]
    assert after[0]["records"][0]["step"] == stopped_at, "resumes at the step where it stopped"
    assert after[0]["finalStep"] == MAX_STEPS and not after[0]["stoppedBySignal"]
    assert {(r["version"], r["lr"], r["momentum"]) for r in after[0]["records"]} == {(2, 0.05, 0.8)}
    assert _checkpoint(checkpoints)["step"] == 50, "periodic checkpoints every 25 steps"

    records = [before[rank]["records"] + after[rank]["records"] for rank in (0, 1)]
    assert [r["step"] for r in records[0]] == list(range(MAX_STEPS))
    per_epoch: dict[int, list[int]] = defaultdict(list)
    for rank_records in records:
        for record in rank_records:
            per_epoch[record["epoch"]].extend(record["indices"])
    for epoch in range(records[0][-1]["epoch"]):
        assert sorted(per_epoch[epoch]) == list(range(SAMPLES)), f"epoch {epoch} across the restart"

    # Replay all 60 steps in one process: identical parameters prove that the model, the optimiser's momentum
    # buffers and the sampler were restored exactly.
    dataset = toy_task.make_dataset(SAMPLES, torch.float64)
    model = toy_task.make_model(torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    for step in range(MAX_STEPS):
        indices = records[0][step]["indices"] + records[1][step]["indices"]
        for group in optimizer.param_groups:
            group["lr"], group["momentum"] = records[0][step]["lr"], records[0][step]["momentum"]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            model(dataset.tensors[0][indices]), dataset.tensors[1][indices]
        ).backward()
        optimizer.step()
    final = torch.load(second.out / "rank0.pt")["params"]
    for expected, got in zip(model.parameters(), final, strict=True):
        torch.testing.assert_close(got, expected.detach(), rtol=1e-9, atol=1e-12)
