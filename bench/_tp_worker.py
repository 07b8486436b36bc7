"""One rank of a data x tensor parallel MLP job, started by `python -m paceline_worker.launch` (one process
per GPU), for bench/execution.py and the integration tests.

The model is an MLP with Linear layers named "0", "2", "4", ... (nn.Sequential with activations between);
PACELINE_PLAN says which of them are split. Writes into --out: rank<R>.json (records, placements, bytes held
of split layers, step times) and from rank 0 final.pt (full parameters) and, with --record-grads, grads.pt
(the full gradient of every step).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from paceline_worker import Worker
from paceline_worker.tensor_parallel import full_tensors, local_parameter_bytes


def make_model(sizes: list[int]) -> nn.Module:
    """Linear layers between `sizes`, ReLU and Tanh alternating between them (seeded: equal on all ranks)."""
    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(nn.ReLU() if i % 2 else nn.Tanh())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def make_dataset(samples: int, features: int, classes: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(samples, features, generator=generator)
    return TensorDataset(inputs, torch.randint(0, classes, (samples,), generator=generator))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", default="6,16,12,4", help="layer widths, input first")
    parser.add_argument("--samples", type=int, default=120)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--record-grads", action="store_true")
    parser.add_argument("--switch-at", type=int, default=None, help="rank 0 offers --switch-to at this step")
    parser.add_argument("--switch-to", default=None, help="new per-pod shares, e.g. 9,5")
    parser.add_argument("--step-sleep", type=float, default=0.0, help="seconds of extra work per step")
    parser.add_argument(
        "--fail-at", type=int, default=None, help="rank --fail-rank raises at this step (a bug)"
    )
    parser.add_argument("--fail-rank", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model = make_model(sizes)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    dataset = make_dataset(args.samples, sizes[0], sizes[-1])
    records: list[dict[str, Any]] = []
    grads: list[dict[str, torch.Tensor]] = []
    seconds: list[float] = []
    with Worker.from_env(model, optimizer, dataset, loss_fn=nn.CrossEntropyLoss()) as w:
        split = [s.module for s in w.config.plan.modules]
        backend = str(torch.distributed.get_backend())  # (after a stop the group may be gone)
        args.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        for batch in w.batches(max_steps=args.max_steps):
            if w.rank == 0 and batch.step == args.switch_at and args.switch_to:
                shares = [int(x) for x in args.switch_to.split(",")]
                offered = w.store.offer(json.dumps({"version": 2, "batchSizes": shares}))
                assert offered.outcome.value == "accepted", offered
            if batch.step == args.fail_at and w.rank == args.fail_rank:
                raise ValueError(f"a bug at step {batch.step}")
            w.forward_backward(batch)
            # The step's samples are in the model once its gradient all-reduce completed: record them now.
            # A rank killed later in the step (its peers checkpoint the update without it) keeps the record.
            record = {
                "step": batch.step,
                "epoch": batch.epoch,
                "dataRank": w.topology.data_rank,
                "indices": batch.indices,
                "version": w.assignment.version,
                "generation": int(os.environ.get("PACELINE_GENERATION") or 0),
                "resumedFrom": w.group_started_at_step,  # with the generation, identifies the run
                "worldSize": w.world_size,
                "pid": os.getpid(),  # a rank kept across a resize keeps its process
                "time": time.time(),  # wall clock: resize pauses are measured across pods
            }
            records.append(record)
            with (args.out / f"rank{w.rank}.steps.jsonl").open("a") as steps_log:  # survives a crash
                steps_log.write(json.dumps(record) + "\n")
            time.sleep(args.step_sleep)
            if args.record_grads:
                grads.append(full_tensors({n: p.grad for n, p in model.named_parameters()}))
            w.optimizer_step()
            now = time.perf_counter()
            seconds.append(now - started)
            started = now
        held, full = local_parameter_bytes(model, split)
        result = {
            "rank": w.rank,
            "localRank": int(os.environ["LOCAL_RANK"]),
            "localWorldSize": int(os.environ["LOCAL_WORLD_SIZE"]),
            "records": records,
            "placements": w.module_placements(),
            "splitBytes": {"held": held, "full": full},
            "stepSeconds": seconds,
            "device": str(w.device),
            "backend": backend,
            "lastComputeSeconds": w.last_timing.compute if w.last_timing else None,
            "gpuMetrics": sorted(
                {m.name for m in w.metrics.registry.collect() if m.name.startswith("paceline_worker_gpu")}
            ),
        }
        state = full_tensors(model.state_dict())
        w.checkpoint()
    (args.out / f"rank{w.rank}.json").write_text(json.dumps(result))
    if w.rank == 0:
        torch.save(state, args.out / "final.pt")
        if args.record_grads:
            torch.save(grads, args.out / "grads.pt")


if __name__ == "__main__":
    main()
