"""The set-up every training role shares — the synchronous `Worker` and the parameter-server `AsyncWorker`:
the loss, the device, the metrics, the HTTP endpoint, SIGTERM handling and the dev-only simulated device."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .config import WorkerConfig
from .control_auth import ControlAuth
from .data import collate_indices, split_pair, to_device
from .http_server import HttpEndpoint, Routes, common_routes
from .metrics import WorkerMetrics
from .signals import StopRequest
from .simulation import SimulatedDevice, SlowdownSchedule
from .wire import Env

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Any], torch.Tensor]
ComputeLoss = Callable[[nn.Module, Any], torch.Tensor]
Agree = Callable[[float, float], tuple[float, float]]  # (sample cost, speed) → the group's maxima

CALIBRATION_PASSES = 5
SIMULATION_HEADROOM = 2.0  # fastest simulated device: twice the measured real compute time


@dataclass(frozen=True)
class Loss:
    """`loss_fn(outputs, targets)` on (inputs, targets) pairs, or `compute_loss(model, data)`; mean loss."""

    loss_fn: LossFn | None = None
    compute_loss: ComputeLoss | None = None

    def __post_init__(self) -> None:
        if (self.loss_fn is None) == (self.compute_loss is None):
            raise ValueError("pass exactly one of loss_fn= or compute_loss=")

    def __call__(self, model: nn.Module, data: Any) -> torch.Tensor:
        if self.compute_loss is not None:
            return self.compute_loss(model, data)
        assert self.loss_fn is not None
        inputs, targets = split_pair(data)
        return self.loss_fn(model(inputs), targets)


def configure_logging(rank: int) -> None:
    """Log to stderr with the rank, unless the application configured logging itself."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"
        )


class RuntimeCore:
    """One rank's shared machinery; the roles add their training loop and their own routes."""

    def __init__(
        self,
        *,
        config: WorkerConfig,
        module: nn.Module,
        dataset: Dataset[Any],
        loss: Loss,
        metrics_rank: int,
    ) -> None:
        self.config = config
        self.module = module
        self.dataset = dataset
        self.loss = loss
        self.stop = StopRequest()
        self.device = torch.device("cpu")
        self.metrics = WorkerMetrics(rank=metrics_rank, job=config.job)
        self._metrics_rank = metrics_rank
        self._http: HttpEndpoint | None = None
        self._served: tuple[Routes, Callable[[], Mapping[str, Any]]] | None = None

    def use_device(self, device: torch.device) -> None:
        """Move the module to `device`; on a GPU the metrics also report that GPU (NVML)."""
        self.device = device
        if device.type == "cuda":
            self.metrics = self._new_metrics()
        self.module.to(device)

    def _new_metrics(self) -> WorkerMetrics:
        gpu_index = self.device.index if self.device.type == "cuda" else None
        return WorkerMetrics(rank=self._metrics_rank, job=self.config.job, gpu_index=gpu_index)

    def reconfigure(self, config: WorkerConfig, *, metrics_rank: int) -> None:
        """Take a new rank identity (a regroup): metrics under the new rank label, served on the same port."""
        self.config = config
        if metrics_rank == self._metrics_rank:
            return
        self._metrics_rank = metrics_rank
        self.metrics = self._new_metrics()
        if self._http is not None and self._served is not None:
            self._http.stop()
            self.serve(*self._served)

    def serve(self, routes: Routes, status: Callable[[], Mapping[str, Any]]) -> tuple[str, int]:
        """Start the HTTP endpoint: /metrics, /healthz, /status plus the role's routes."""
        self._served = (routes, status)
        auth = ControlAuth.from_env(
            {Env.TOKEN_FILE: self.config.token_file or ""},
            on_refused=lambda refusal: self.metrics.refused(refusal),
            who=f"rank {self.config.rank}'s endpoint",
        )
        self._http = HttpEndpoint(
            {**common_routes(self.metrics.registry, status), **routes},
            host=self.config.bind_address,
            port=self.config.metrics_port,
            auth=auth,
        ).start()
        return self._http.address

    @property
    def http_address(self) -> tuple[str, int] | None:
        return None if self._http is None else self._http.address

    def close(self) -> None:
        """Stop the endpoint and restore the SIGTERM handler."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        self.stop.uninstall()

    def calibrate_sample_cost(self, batch_size: int) -> float:
        """Median per-sample time of a few real forward/backward passes after a warm-up pass; leaves the
        model's buffers, the RNG and the gradients as they were."""
        size = max(1, min(batch_size, len(self.dataset)))  # type: ignore[arg-type]
        data = to_device(collate_indices(self.dataset, list(range(size))), self.device)
        buffers = {name: b.detach().clone() for name, b in self.module.named_buffers()}
        rng = torch.get_rng_state()
        durations = []
        for _ in range(CALIBRATION_PASSES + 1):
            started = time.perf_counter()
            self.loss(self.module, data).backward()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            durations.append(time.perf_counter() - started)
        for param in self.module.parameters():
            param.grad = None
        with torch.no_grad():
            for name, b in self.module.named_buffers():
                b.copy_(buffers[name])
        torch.set_rng_state(rng)
        return statistics.median(durations[1:]) / size

    def simulated_device(self, *, batch_size: int, agree: Agree) -> SimulatedDevice | None:
        """The dev-only speed simulation (PACELINE_SIM_SPEED), or None on real hardware.

        Without PACELINE_SIM_SAMPLE_COST_S the per-sample cost is calibrated and scaled so that even the
        fastest simulated device of the group takes SIMULATION_HEADROOM times the real compute time: padding
        can only slow a step down, so without the headroom a fast simulated device would run at real CPU speed
        and the speed ratios would be lost. `agree` takes (cost, speed) and returns the group's maxima; every
        rank of a synchronous group must call this (it is a collective there).
        """
        sim = self.config.simulation
        calibrate = sim is not None and sim.sample_cost_s is None
        measured = self.calibrate_sample_cost(batch_size) if calibrate else 0.0
        max_cost, max_speed = agree(measured, sim.speed if sim is not None else 0.0)
        if sim is None:
            return None
        cost = max_cost * max_speed * SIMULATION_HEADROOM if sim.sample_cost_s is None else sim.sample_cost_s
        log.info(
            "rank %d: SIMULATED device speed %.3g, per-sample cost %.3gs (dev/test only)",
            self.config.rank,
            sim.speed,
            cost,
        )
        return SimulatedDevice(
            speed=sim.speed,
            schedule=SlowdownSchedule(sim.schedule_path),
            sample_cost_s=cost,
            exponential=sim.exponential,
            seed=self.config.seed * 7919 + self.config.rank,
        )


def alone(cost: float, speed: float) -> tuple[float, float]:
    """`agree` for a rank that calibrates on its own (asynchronous workers never wait for each other)."""
    return cost, speed
