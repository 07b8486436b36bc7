"""AsyncWorker: pull parameters from the PS shards, compute a gradient, push it; nobody waits for anybody."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import ConfigError
from ..data import Batch, collate_indices, split_pair, to_device
from ..metrics import StepTiming, WorkerMetrics
from ..signals import StopRequest
from ..simulation import SlowdownSchedule, simulated_compute_seconds
from .client import PushResult, ShardConnection
from .config import AsyncWorkerConfig, StepDistribution, worker_config_from_env
from .http_endpoint import HttpEndpoint, Response, health_route, metrics_route
from .sharding import ShardLayout, assign_shards
from .tensors import flatten, load, parameter_specs

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Any], torch.Tensor]
ComputeLoss = Callable[[nn.Module, Any], torch.Tensor]


def worker_indices(*, size: int, rank: int, world_size: int, seed: int, epoch: int) -> list[int]:
    """This worker's part of epoch `epoch`: every world_size-th index of a permutation shared by all ranks."""
    generator = torch.Generator().manual_seed(seed + epoch)
    return [int(i) for i in torch.randperm(size, generator=generator)[rank::world_size]]


class AsyncWorker:
    """Asynchronous data-parallel worker; the PS shards own the parameters and the optimiser (heavy ball)."""

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset[Any],
        *,
        config: AsyncWorkerConfig,
        loss_fn: LossFn | None = None,
        compute_loss: ComputeLoss | None = None,
        learning_rate: float = 0.01,
        momentum: float = 0.0,
        shuffle: bool = True,
    ) -> None:
        if (loss_fn is None) == (compute_loss is None):
            raise ValueError("pass exactly one of loss_fn= or compute_loss=")
        self.config = config
        self.module = model
        self.dataset = dataset
        self._loss_fn = loss_fn
        self._compute_loss = compute_loss
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.shuffle = shuffle
        base = config.base
        self.rank, self.world_size = base.rank, base.world_size
        self.batch_size = config.batch_size
        self.device = torch.device(f"cuda:{base.local_rank}" if torch.cuda.is_available() else "cpu")
        self.local_step = 0
        self.epoch = 0
        self.versions: list[int] = []
        self.last_push: list[PushResult] = []
        self.last_timing: StepTiming | None = None
        self.stopped_by_signal = False
        self.metrics = WorkerMetrics(rank=self.rank, job=base.job)
        self._params = list(model.parameters())
        self._layouts: list[ShardLayout] = assign_shards(parameter_specs(model), len(config.ps_addrs))
        self._shards: list[ShardConnection] = []
        self._http: HttpEndpoint | None = None
        self._stop = StopRequest()
        self._schedule = SlowdownSchedule(base.simulation.schedule_path if base.simulation else None)
        self._sample_cost_s: float | None = None
        self._rng = random.Random(base.seed * 7919 + self.rank)

    @classmethod
    def from_env(
        cls,
        model: nn.Module,
        dataset: Dataset[Any],
        *,
        loss_fn: LossFn | None = None,
        compute_loss: ComputeLoss | None = None,
        learning_rate: float = 0.01,
        momentum: float = 0.0,
        default_batch_size: int | None = None,
        env: Mapping[str, str] | None = None,
        shuffle: bool = True,
    ) -> AsyncWorker:
        """Build from the environment (docs/asynchronous.md); lr/momentum are the PS's version-0 values."""
        config = worker_config_from_env(
            os.environ if env is None else env, default_batch_size=default_batch_size
        )
        return cls(
            model,
            dataset,
            config=config,
            loss_fn=loss_fn,
            compute_loss=compute_loss,
            learning_rate=learning_rate,
            momentum=momentum,
            shuffle=shuffle,
        )

    # ---- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> AsyncWorker:
        self.module.to(self.device)
        base = self.config.base
        try:
            for layout, address in zip(self._layouts, self.config.ps_addrs, strict=True):
                connection = ShardConnection(
                    address,
                    shard=layout.shard,
                    worker=str(self.rank),
                    connect_timeout_s=self.config.connect_timeout_s,
                )
                self._shards.append(connection)
                version, values = connection.init(
                    fingerprint=layout.fingerprint(),
                    values=flatten(self._params, layout),
                    learning_rate=self.learning_rate,
                    momentum=self.momentum,
                )
                load(self._params, layout, values)
                self.versions.append(version)
            if base.simulation is not None:
                self._sample_cost_s = base.simulation.sample_cost_s
                if self._sample_cost_s is None:
                    self._sample_cost_s = self._calibrate_sample_cost() * 2.0 * base.simulation.speed
                    log.warning(
                        "no PACELINE_SIM_SAMPLE_COST_S: calibrated %.6fs/sample on this rank alone",
                        self._sample_cost_s,
                    )
            self._http = HttpEndpoint(
                {
                    ("GET", "/metrics"): metrics_route(self.metrics.registry),
                    ("GET", "/healthz"): health_route,
                    ("GET", "/status"): lambda q, b: Response.json(HTTPStatus.OK, self.status()),
                },
                host=base.bind_address,
                port=base.metrics_port,
            ).start()
        except BaseException:
            self._close_connections(goodbye=False)
            raise
        self.metrics.observe_assignment(
            version=base.assignment.version,
            batch_size=self.batch_size,
            global_batch_size=sum(base.assignment.batch_sizes),
            step=0,
            applied_at=time.time(),
        )
        self._stop.install()
        log.info(
            "async worker %d/%d: %d PS shard(s) %s, batch %d, HTTP on %s:%d",
            self.rank,
            self.world_size,
            len(self._shards),
            ",".join(str(a) for a in self.config.ps_addrs),
            self.batch_size,
            *self.http_address,
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.uninstall()
        self._close_connections(goodbye=exc_type is None)
        if self._http is not None:
            self._http.stop()
        if exc_type is None and self.stopped_by_signal:
            raise SystemExit(0)

    def _close_connections(self, *, goodbye: bool) -> None:
        for connection in self._shards:
            if goodbye:
                connection.bye()
            connection.close()
        self._shards = []

    @property
    def http_address(self) -> tuple[str, int]:
        if self._http is None:
            raise RuntimeError("the HTTP endpoint starts when the worker is entered (with worker: ...)")
        return self._http.address

    def status(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "worldSize": self.world_size,
            "step": self.local_step,
            "epoch": self.epoch,
            "versions": list(self.versions),
            "lastStaleness": [p.staleness for p in self.last_push],
        }

    # ---- training ------------------------------------------------------------------------------------
    def batches(self, *, epochs: int | None = None, max_steps: int | None = None) -> Iterator[Batch]:
        """This worker's mini-batches; stops after `epochs` passes over its part, `max_steps`, or SIGTERM."""
        size = len(self.dataset)  # type: ignore[arg-type]
        while epochs is None or self.epoch < epochs:
            if self.shuffle:
                indices = worker_indices(
                    size=size,
                    rank=self.rank,
                    world_size=self.world_size,
                    seed=self.config.base.seed,
                    epoch=self.epoch,
                )
            else:
                indices = list(range(size))[self.rank :: self.world_size]
            for start in range(0, len(indices), self.batch_size):
                if self._stop.requested:
                    self.stopped_by_signal = True
                    return
                if max_steps is not None and self.local_step >= max_steps:
                    return
                chosen = indices[start : start + self.batch_size]
                data = to_device(collate_indices(self.dataset, chosen), self.device)
                yield Batch(
                    step=self.local_step,
                    epoch=self.epoch,
                    indices=chosen,
                    global_batch_size=len(chosen),
                    data=data,
                )
            self.epoch += 1

    def _loss(self, data: Any) -> torch.Tensor:
        if self._compute_loss is not None:
            return self._compute_loss(self.module, data)
        assert self._loss_fn is not None
        inputs, targets = split_pair(data)
        return self._loss_fn(self.module(inputs), targets)

    def step(self, batch: Batch) -> float:
        """Gradient at the parameters read last, pushed to every shard; returns this batch's mean loss."""
        started = time.perf_counter()
        for param in self._params:
            param.grad = None
        loss = self._loss(batch.data)
        loss.backward()
        self._pad_compute(started, batch.size)
        computed = time.perf_counter()
        grads = [p.grad for p in self._params]
        results = []
        for connection, layout in zip(self._shards, self._layouts, strict=True):
            result, values = connection.push(
                read_version=self.versions[layout.shard], gradient=flatten(grads, layout)
            )
            load(self._params, layout, values)
            self.versions[layout.shard] = result.version
            results.append(result)
        self.last_push = results
        finished = time.perf_counter()
        self.last_timing = StepTiming(data=0.0, compute=computed - started, communication=finished - computed)
        value = float(loss.detach())
        self.metrics.observe_step(
            timing=self.last_timing,
            samples=batch.size,
            loss=value if math.isfinite(value) else None,
            epoch=self.epoch,
        )
        self.local_step += 1
        return value

    def pull(self) -> list[int]:
        """Read the current model from every shard now (e.g. before evaluating); returns the versions."""
        for connection, layout in zip(self._shards, self._layouts, strict=True):
            version, values = connection.pull()
            load(self._params, layout, values)
            self.versions[layout.shard] = version
        return list(self.versions)

    def train(self, *, epochs: int | None = None, max_steps: int | None = None, log_every: int = 50) -> int:
        """The loop: for batch in batches(): step(batch). Returns this worker's completed steps."""
        for batch in self.batches(epochs=epochs, max_steps=max_steps):
            loss = self.step(batch)
            if log_every and self.local_step % log_every == 0:
                staleness = [p.staleness for p in self.last_push]
                log.info(
                    "rank %d step %d epoch %d loss %.4f staleness %s versions %s",
                    self.rank,
                    self.local_step,
                    self.epoch,
                    loss,
                    staleness,
                    self.versions,
                )
        return self.local_step

    # ---- dev-only speed simulation -----------------------------------------------------------------
    def _pad_compute(self, started: float, batch_size: int) -> None:
        simulation = self.config.base.simulation
        if simulation is None or self._sample_cost_s is None:
            return
        factor = self._schedule.factor()
        self.metrics.observe_simulation(factor)
        target = simulated_compute_seconds(
            sample_cost_s=self._sample_cost_s, batch_size=batch_size, factor=factor, speed=simulation.speed
        )
        if self.config.step_distribution is StepDistribution.EXPONENTIAL:
            target *= self._rng.expovariate(1.0)
        remaining = target - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)

    def _calibrate_sample_cost(self, passes: int = 3) -> float:
        """Median seconds per sample of a few real forward/backward passes (gradients discarded)."""
        size = len(self.dataset)  # type: ignore[arg-type]
        chosen = list(range(min(self.batch_size, size)))
        data = to_device(collate_indices(self.dataset, chosen), self.device)
        timings = []
        for _ in range(passes):
            started = time.perf_counter()
            self._loss(data).backward()
            timings.append((time.perf_counter() - started) / max(len(chosen), 1))
        for param in self._params:
            param.grad = None
        if not timings:
            raise ConfigError("cannot calibrate the simulated device on an empty dataset")
        return sorted(timings)[len(timings) // 2]
