"""AsyncWorker: pull parameters from the PS shards, compute a gradient, push it; nobody waits for anybody."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..core import ComputeLoss, Loss, LossFn, RuntimeCore, alone, configure_logging
from ..curvature import top_hessian_eigenvalue
from ..data import Batch, collate_indices, to_device
from ..metrics import StepTiming, WorkerMetrics
from ..simulation import SimulatedDevice
from ..wire import EXIT_TEMPORARY_FAILURE, Env
from .client import PushResult, ShardConnection
from .config import AsyncWorkerConfig, worker_config_from_env
from .sharding import ShardLayout, assign_shards
from .tensors import flatten, load, parameter_specs

log = logging.getLogger(__name__)
DEFAULT_CURVATURE_EVERY = 50  # steps between two curvature estimates (PACELINE_CURVATURE_EVERY; 0: off)


def curvature_due(*, step: int, every: int, rank: int, world_size: int) -> bool:
    """Whether a worker estimates the curvature after its step `step` (0-based): every `every` of its
    steps, the ranks staggered by every/world_size steps. Unstaggered, all M workers would estimate at
    their step every − 1, i.e. all at once near global update M·every, and then not again for M·every
    updates: the operator would have no curvature for the first M·every updates. Staggered, the fleet's
    estimates come one per ≈ `every` global updates (equal speeds) from the start, at any M."""
    if every <= 0:
        return False
    offset = (rank % max(world_size, 1)) * every // max(world_size, 1)
    return (step + offset) % every == every - 1


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
        base = config.base
        loss = Loss(loss_fn, compute_loss)
        self.core = RuntimeCore(config=base, module=model, dataset=dataset, loss=loss, metrics_rank=base.rank)
        self.config = config
        self.module = model
        self.dataset = dataset
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.shuffle = shuffle
        self.rank, self.world_size = base.rank, base.world_size
        self.batch_size = config.batch_size
        self.local_step = 0
        self.epoch = 0
        self.versions: list[int] = []
        self.last_push: list[PushResult] = []
        self.last_timing: StepTiming | None = None
        self.stopped_by_signal = False
        self._params = list(model.parameters())
        self._specs = parameter_specs(model)
        self._layouts: list[ShardLayout] = assign_shards(self._specs, len(config.ps_addrs))
        self._shards: list[ShardConnection] = []
        self._simulation: SimulatedDevice | None = None
        every = os.environ.get(Env.CURVATURE_EVERY, str(DEFAULT_CURVATURE_EVERY))
        self.curvature_every = int(every) if every.strip().isdigit() else DEFAULT_CURVATURE_EVERY
        self.curvature: float | None = None
        self._direction: list[torch.Tensor] | None = None

    @classmethod
    def from_env(
        cls,
        model: nn.Module,
        dataset: Dataset[Any],
        *,
        default_batch_size: int | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> AsyncWorker:
        """Build from the environment (docs/asynchronous.md); `options` are the constructor's (loss_fn= or
        compute_loss=, learning_rate= and momentum= — the PS's version-0 values —, shuffle=)."""
        config = worker_config_from_env(
            os.environ if env is None else env, default_batch_size=default_batch_size
        )
        configure_logging(config.base.rank)
        return cls(model, dataset, config=config, **options)

    # ---- lifecycle ---------------------------------------------------------------------------------
    @property
    def metrics(self) -> WorkerMetrics:
        return self.core.metrics

    @property
    def device(self) -> torch.device:
        return self.core.device

    def __enter__(self) -> AsyncWorker:
        base = self.config.base
        cuda = torch.cuda.is_available()
        self.core.use_device(torch.device("cuda", base.local_rank) if cuda else torch.device("cpu"))
        try:
            for layout in self._layouts:
                self._shards.append(self._join(layout))
            self._simulation = self.core.simulated_device(batch_size=self.batch_size, agree=alone)
            self.core.serve({}, self.status)
        except BaseException:
            self._close_connections(goodbye=False)
            self.core.close()
            raise
        self.metrics.observe_assignment(
            version=base.assignment.version,
            batch_size=self.batch_size,
            global_batch_size=sum(base.assignment.batch_sizes),
            step=0,
            applied_at=time.time(),
        )
        self.core.stop.install()
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
        self._close_connections(goodbye=exc_type is None)
        self.core.close()
        if exc_type is None and self.stopped_by_signal:
            raise SystemExit(0)

    def _join(self, layout: ShardLayout) -> ShardConnection:
        """Connect to a shard (retrying until the connect timeout, or a stop request: then
        ConnectionAbortedError) and load its parameters: the shard's, or — when this worker is the first to
        reach a shard without a checkpoint — this worker's own."""
        deadline = time.monotonic() + self.config.connect_timeout_s
        while True:
            connection = ShardConnection(
                self.config.ps_addrs[layout.shard],
                shard=layout.shard,
                worker=str(self.rank),
                connect_timeout_s=max(deadline - time.monotonic(), 0.0),
                cancelled=lambda: self.core.stop.requested,
            )
            try:
                version, values = connection.init(
                    fingerprint=layout.fingerprint(),
                    values=flatten(self._params, layout),
                    learning_rate=self.learning_rate,
                    momentum=self.momentum,
                    model=self._specs,
                    shards=len(self._layouts),
                )
                break
            except OSError as exc:  # accepted, then closed: a shard on its way out; try again
                connection.close()
                if self.core.stop.requested:
                    raise ConnectionAbortedError(f"stopped joining PS shard {layout.shard}") from exc
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"PS shard {layout.shard}: {exc}") from exc
                time.sleep(0.2)
            except BaseException:
                connection.close()
                raise
        load(self._params, layout, values)
        if layout.shard < len(self.versions):
            self.versions[layout.shard] = version
        else:
            self.versions.append(version)
        return connection

    def _rejoin(self, layout: ShardLayout, error: Exception) -> bool:
        """The shard's connection broke (its process restarted): connect again and read its parameters
        (restored from its checkpoint); this step's gradient for that shard is lost. False when the worker
        was asked to stop meanwhile (SIGTERM: the pods are going away, a new shard is not this worker's)."""
        self._shards[layout.shard].close()
        if self.core.stop.requested:
            log.info("PS shard %d connection lost (%s) while stopping", layout.shard, error)
            return False
        log.warning("PS shard %d connection lost (%s); reconnecting", layout.shard, error)
        try:
            self._shards[layout.shard] = self._join(layout)
        except ConnectionAbortedError:
            log.info("stopped while reconnecting to PS shard %d", layout.shard)
            return False
        except ConnectionError as exc:  # e.g. a re-created PS pod at another address: restart the pod
            log.error(
                "PS shard %d did not come back: %s; exiting %d", layout.shard, exc, EXIT_TEMPORARY_FAILURE
            )
            self._shards.pop(layout.shard)
            raise SystemExit(EXIT_TEMPORARY_FAILURE) from exc
        log.info("rejoined PS shard %d at model version %d", layout.shard, self.versions[layout.shard])
        return True

    def _close_connections(self, *, goodbye: bool) -> None:
        for connection in self._shards:
            if goodbye:
                connection.bye()
            connection.close()
        self._shards = []

    @property
    def http_address(self) -> tuple[str, int]:
        address = self.core.http_address
        if address is None:
            raise RuntimeError("the HTTP endpoint starts when the worker is entered (with worker: ...)")
        return address

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
                if self.core.stop.requested:
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

    def step(self, batch: Batch) -> float:
        """Gradient at the parameters read last, pushed to every shard; returns this batch's mean loss."""
        started = time.perf_counter()
        for param in self._params:
            param.grad = None
        loss = self.core.loss(self.module, batch.data)
        loss.backward()
        if self._simulation is not None:
            self._simulation.pad(started_at=started, batch_size=batch.size)
            self.metrics.observe_simulation(self._simulation.last_factor)
        computed = time.perf_counter()
        grads = [p.grad for p in self._params]
        results = []
        for connection, layout in zip(list(self._shards), self._layouts, strict=True):
            try:
                result, values = connection.push(
                    read_version=self.versions[layout.shard], gradient=flatten(grads, layout)
                )
            except OSError as exc:  # ProtocolError included: the shard went away
                if not self._rejoin(layout, exc):
                    self.stopped_by_signal = True
                    break  # stopping: batches() ends at the next batch
                continue
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
        if curvature_due(
            step=self.local_step, every=self.curvature_every, rank=self.rank, world_size=self.world_size
        ):
            self._estimate_curvature(batch)
        self.local_step += 1
        return value

    def _estimate_curvature(self, batch: Batch) -> None:
        """Top Hessian eigenvalue on this batch at the parameters just received (for the momentum policy)."""
        estimate, self._direction = top_hessian_eigenvalue(
            lambda: self.core.loss(self.module, batch.data), self._params, start=self._direction
        )
        for param in self._params:
            param.grad = None
        if math.isfinite(estimate) and estimate > 0:
            self.curvature = estimate
            self.metrics.observe_curvature(estimate)

    def pull(self) -> list[int]:
        """Read the current model from every shard now (e.g. before evaluating); returns the versions."""
        for connection, layout in zip(list(self._shards), self._layouts, strict=True):
            try:
                version, values = connection.pull()
            except OSError as exc:
                if not self._rejoin(layout, exc):
                    self.stopped_by_signal = True
                    break
                continue
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
