"""DDP communication hook: sum-allreduce gradients and mark where local computation ends.

The worker scales each rank's loss by b_m / B, so summing the gradients over ranks gives exactly the gradient
of the mean loss over the B samples of the step (sample-weighted averaging), whatever the batch sizes.
The hook of the last bucket runs once all local gradients exist: it records that moment (end of compute) and,
in the dev-only speed simulation, sleeps there so that slower simulated devices delay the final all-reduce.
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
    if bucket.is_last():
        state.on_last_bucket()
    work = dist.all_reduce(bucket.buffer(), op=dist.ReduceOp.SUM, async_op=True)
    assert work is not None
    return work.get_future().then(lambda fut: fut.value()[0])
