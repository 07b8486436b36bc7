"""One rank of a tensor-parallel + data-parallel job, run under `python -m paceline_worker.launch` by the
integration tests (not a test module itself).

A small MLP whose three Linear layers the plan in PACELINE_PLAN may split. Writes into --out:
rank<R>.json (per-step records, placements, parameter bytes) and, from rank 0, final.pt (full parameters).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from paceline_worker import Worker
from paceline_worker.tensor_parallel import full_tensors, local_parameter_bytes

FEATURES, HIDDEN, CLASSES = 6, 16, 4


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 12), nn.Tanh(), nn.Linear(12, CLASSES)
    )


def make_dataset(samples: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(samples, FEATURES, generator=generator)
    targets = torch.randint(0, CLASSES, (samples,), generator=generator)
    return TensorDataset(inputs, targets)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=120)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--switch-at", type=int, default=None, help="rank 0 offers --switch-to at this step")
    parser.add_argument("--switch-to", type=str, default=None, help="new per-pod shares, e.g. 9,5")
    args = parser.parse_args()
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    records = []
    with Worker.from_env(model, optimizer, make_dataset(args.samples), loss_fn=nn.CrossEntropyLoss()) as w:
        split = [s.module for s in w.config.plan.modules]
        for batch in w.batches(max_steps=args.max_steps):
            if w.rank == 0 and batch.step == args.switch_at and args.switch_to:
                shares = [int(x) for x in args.switch_to.split(",")]
                result = w.store.offer(json.dumps({"version": 2, "batchSizes": shares}))
                assert result.outcome.value == "accepted", result
            w.step(batch)
            records.append(
                {
                    "step": batch.step,
                    "dataRank": w.topology.data_rank,
                    "indices": batch.indices,
                    "globalBatchSize": batch.global_batch_size,
                    "version": w.assignment.version,
                }
            )
        held, full = local_parameter_bytes(model, split)
        result = {
            "rank": w.rank,
            "localRank": int(os.environ["LOCAL_RANK"]),
            "localWorldSize": int(os.environ["LOCAL_WORLD_SIZE"]),
            "records": records,
            "placements": w.module_placements(),
            "splitBytes": {"held": held, "full": full},
            "finalStep": w.global_step,
        }
        state = full_tensors(model.state_dict())
        w.checkpoint()
    (args.out / f"rank{w.rank}.json").write_text(json.dumps(result))
    if w.rank == 0:
        torch.save(state, args.out / "final.pt")


if __name__ == "__main__":
    main()
