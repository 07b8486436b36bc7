"""Sample-weighted averaging: with unequal per-rank batches (one rank even empty in an epoch's last step),
the all-reduced gradient equals single-process SGD on the same global batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch

SAMPLES = 22  # B = 10: two full steps and a 2-sample last step per epoch, split [0, 1, 1]
BATCH_SIZES = [2, 5, 3]
LR, MOMENTUM = 0.2, 0.5


@pytest.mark.integration
def test_distributed_gradient_equals_single_process_mean_loss(launch: Any, toy_task: Any) -> None:
    group = launch(
        "grad",
        assignment={"version": 1, "batchSizes": BATCH_SIZES, "learningRate": None, "momentum": None},
        args=[
            "--samples",
            str(SAMPLES),
            "--epochs",
            "2",
            "--lr",
            str(LR),
            "--momentum",
            str(MOMENTUM),
            "--record-grads",
        ],
    )
    assert group.wait() == [0, 0, 0], group.logs()
    records = [group.result(rank)["records"] for rank in range(3)]
    tensors = [torch.load(group.out / f"rank{rank}.pt") for rank in range(3)]
    assert [len(r) for r in records] == [6, 6, 6]
    assert [len(r["indices"]) for r in records[0]] == [2, 2, 0, 2, 2, 0], "epoch's last step: rank 0 empty"

    dataset = toy_task.make_dataset(SAMPLES, torch.float32)
    model = toy_task.make_model(torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for step in range(6):
        indices = [i for rank in range(3) for i in records[rank][step]["indices"]]
        assert len(indices) == records[0][step]["globalBatchSize"]
        inputs, targets = dataset.tensors[0][indices], dataset.tensors[1][indices]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        for rank in range(3):
            for param, grad in zip(model.parameters(), tensors[rank]["grads"][step], strict=True):
                assert param.grad is not None
                relative = float((grad - param.grad).norm() / param.grad.norm())
                assert relative < 1e-6, f"step {step} rank {rank}: relative gradient error {relative:.2e}"
        optimizer.step()
    for rank in range(3):
        for param, final in zip(model.parameters(), tensors[rank]["params"], strict=True):
            torch.testing.assert_close(final, param.detach(), rtol=1e-6, atol=1e-7)
