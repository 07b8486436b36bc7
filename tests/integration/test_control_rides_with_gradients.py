"""The control vector rides in the last gradient bucket: two real gloo ranks under DDP with Paceline's hook.
Each rank's lanes (rank 0's assignment, both ranks' stop flags and generation votes) come back summed and
decode to what a separate control all-reduce gives, and the gradients are the plain sum, untouched."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import LOOPBACK, free_port
from torch.nn.parallel import DistributedDataParallel

from paceline_worker.assignment import decode_control, encode_control, from_lanes, to_lanes
from paceline_worker.gradient_sync import GradientSync, sum_allreduce_hook
from paceline_worker.wire import Assignment

WORLD = 2
ASSIGNMENT = Assignment(version=12, batch_sizes=(3, 5), learning_rate=0.0123, momentum=-0.3)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _control(rank: int) -> list[float]:
    return encode_control(
        ASSIGNMENT if rank == 0 else None, stop=rank == 1, world_size=WORLD, ready_generation=7
    )


def _rank(rank: int, port: int, dtype_name: str, out: str) -> None:
    dtype = DTYPES[dtype_name]
    store = dist.TCPStore(LOOPBACK, port, WORLD, rank == 0, timeout=timedelta(seconds=120))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 40), torch.nn.ReLU(), torch.nn.Linear(40, 3)).to(dtype)
    sync = GradientSync(simulation=None, device=torch.device("cpu"))
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.0005)  # several buckets: the lanes go in the last
    ddp.register_comm_hook(sync, sum_allreduce_hook)
    results = []
    for step in range(3):
        torch.manual_seed(100 * step + rank)
        inputs = torch.randn(4, 6, dtype=dtype)
        sync.begin_step(batch_size=4)
        sync.outgoing = to_lanes(_control(rank))
        ddp.zero_grad()
        ddp(inputs).square().mean().backward()
        local = torch.autograd.grad(model(inputs).square().mean(), list(model.parameters()))
        received = None if sync.received is None else sync.received.tolist()
        sync.received = None
        results.append(
            {
                "received": received,
                "grads": [p.grad.clone() for p in model.parameters()],
                "local": [g.clone() for g in local],
                "unsent": sync.outgoing,
            }
        )
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.integration
@pytest.mark.parametrize("dtype_name", sorted(DTYPES))
def test_control_lanes_come_back_summed_and_gradients_untouched(dtype_name: str, tmp_path: Path) -> None:
    mp.start_processes(
        _rank, args=(free_port(), dtype_name, str(tmp_path)), nprocs=WORLD, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    expected = decode_control([sum(values) for values in zip(*map(_control, range(WORLD)), strict=True)])
    assert expected.assignment == ASSIGNMENT and expected.stop_requested and expected.regroup_generation == 7
    for step in range(3):
        for rank in range(WORLD):
            result = ranks[rank][step]
            assert result["unsent"] is None, "the hook took the lanes"
            assert result["received"] is not None, f"step {step} rank {rank}: nothing came back"
            assert decode_control(from_lanes(result["received"], world_size=WORLD)) == expected
            for grad, *locals_ in zip(result["grads"], *(r[step]["local"] for r in ranks), strict=True):
                torch.testing.assert_close(grad, sum(locals_))
