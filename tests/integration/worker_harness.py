"""A tiny training script run as one rank by the worker integration tests (not a test module itself).

Writes into --out: rank<R>.port once serving, rank<R>.json (per-step records) and rank<R>.pt (gradients and
final parameters) when the loop ends, including after a SIGTERM stop.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from worker_toy_task import make_dataset, make_model

from paceline_worker import Worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--record-grads", action="store_true")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rank = int(os.environ["RANK"])
    model = make_model(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    records: list[dict[str, Any]] = []
    grads: list[list[torch.Tensor]] = []
    with Worker.from_env(
        model, optimizer, make_dataset(args.samples, dtype), loss_fn=nn.CrossEntropyLoss()
    ) as w:
        address = w.http_address
        assert address is not None
        (args.out / f"rank{rank}.port").write_text(str(address[1]))
        for batch in w.batches(epochs=args.epochs, max_steps=args.max_steps):
            loss = w.forward_backward(batch)
            if args.record_grads:
                grads.append([p.grad.detach().clone() for p in model.parameters() if p.grad is not None])
            group = optimizer.param_groups[0]
            records.append(
                {
                    "step": batch.step,
                    "epoch": batch.epoch,
                    "indices": batch.indices,
                    "globalBatchSize": batch.global_batch_size,
                    "version": w.assignment.version,
                    "lr": group["lr"],
                    "momentum": group["momentum"],
                    "loss": loss,
                }
            )
            w.optimizer_step()
        summary = {
            "records": records,
            "stoppedBySignal": w.stopped_by_signal,
            "finalStep": w.global_step,
            "history": [h.to_json_dict() for h in w.assignment_history],
        }
        (args.out / f"rank{rank}.json").write_text(json.dumps(summary))
        torch.save(
            {"grads": grads, "params": [p.detach().clone() for p in model.parameters()]},
            args.out / f"rank{rank}.pt",
        )


if __name__ == "__main__":
    main()
