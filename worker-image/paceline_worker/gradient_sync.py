"""DDP communication hook: sum-allreduce gradients, mark where local computation ends, and carry the next
step's control lanes in the last bucket.

The worker scales each rank's loss by b_m / B, so summing the gradients over ranks gives exactly the gradient
of the mean loss over the B samples of the step (sample-weighted averaging), whatever the batch sizes.
The hook of the last bucket runs once all local gradients exist: it records that moment (end of compute) and,
in the dev-only speed simulation, sleeps there so that slower simulated devices delay the final all-reduce.
When the worker set `outgoing` (the control lanes of the next step boundary, `paceline_worker.assignment`),
the last bucket's all-reduce carries them too and their sum lands in `received`: the boundary then needs no
collective of its own. Buckets of another dtype than float32/float64 (e.g. bf16) carry nothing; the worker
then runs the separate control all-reduce, the same on every rank (they share the dtype).
"""

import time

import torch
import torch.distributed as dist

from .simulation import SimulatedDevice


class GradientSync:
    """State of the hook for the current step; on CUDA the compute end is also recorded as a stream event."""

    def __init__(self, *, simulation: SimulatedDevice | None, device: torch.device) -> None:
        self.simulation = simulation
        self.cuda = device.type == "cuda"
        self.compute_started_at = 0.0
        self.local_done_at: float | None = None
        self.batch_size = 0
        self._start_event: torch.cuda.Event | None = None
        self._done_event: torch.cuda.Event | None = None
        self.outgoing: list[float] | None = None  # control lanes for the last bucket of this step
        self.received: torch.Tensor | None = None  # their sum over ranks, once the bucket is reduced

    def begin_step(self, *, batch_size: int) -> None:
        self.compute_started_at = time.perf_counter()
        self.local_done_at = None
        self.batch_size = batch_size
        if self.cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._done_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()

    def on_last_bucket(self) -> None:
        if self.simulation is not None:
            self.simulation.pad(started_at=self.compute_started_at, batch_size=self.batch_size)
        if self._done_event is not None:
            self._done_event.record()
        self.local_done_at = time.perf_counter()

    def local_compute_seconds(self, backward_done_at: float) -> float:
        """Forward + local backward time (call after the device is synchronised)."""
        if self._start_event is not None and self._done_event is not None and self.local_done_at is not None:
            return float(self._start_event.elapsed_time(self._done_event)) / 1000.0
        end = self.local_done_at if self.local_done_at is not None else backward_done_at
        return end - self.compute_started_at


# No `from __future__ import annotations` here: DDP checks the hook's annotations at run time.
def sum_allreduce_hook(state: GradientSync, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    buffer = bucket.buffer()
    lanes = None
    if bucket.is_last():
        state.on_last_bucket()
        lanes, state.outgoing = state.outgoing, None
    size = buffer.numel()
    if lanes is not None and buffer.dtype in CARRYING_DTYPES:
        buffer = torch.cat([buffer, torch.tensor(lanes, dtype=buffer.dtype).to(buffer.device)])
    work = dist.all_reduce(buffer, op=dist.ReduceOp.SUM, async_op=True)
    assert work is not None

    def split(fut: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
        reduced = fut.value()[0]
        if reduced.numel() > size:
            state.received = reduced[size:]
        return reduced[:size]

    return work.get_future().then(split)


CARRYING_DTYPES = (torch.float32, torch.float64)
