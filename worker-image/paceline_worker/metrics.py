"""Prometheus metrics of one worker, in its own CollectorRegistry (names prefixed paceline_worker_)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .control_auth import Refusal
from .gpu_metrics import register_gpu_collector
from .wire import LAUNCHER_REFUSED_WRITES, PHASES, Label, WorkerMetric

_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, kw_only=True)
class StepTiming:
    """Seconds spent in each phase of one step.

    data: fetching and collating the batch; compute: forward, local backward, simulated padding and the
    optimiser update; communication: the step-boundary control exchange plus gradient all-reduce time not
    hidden behind backward (this includes waiting for slower ranks).
    """

    data: float
    compute: float
    communication: float

    @property
    def total(self) -> float:
        return self.data + self.compute + self.communication


def refusal_counter(
    registry: CollectorRegistry, name: str, labels: Mapping[str, str]
) -> Callable[[Refusal], None]:
    """A counter of refused control writes by reason (every reason exported from 0); returns its `inc`."""
    counter = Counter(
        name,
        "Control writes refused: no bearer token (missing), another one (wrong), none here (unconfigured)",
        [*labels, Label.REASON.value],
        registry=registry,
    )
    children = {r: counter.labels(**labels, **{Label.REASON.value: r.value}) for r in Refusal}
    return lambda refusal: children[refusal].inc()


def launcher_metrics(job: str) -> tuple[CollectorRegistry, Callable[[Refusal], None]]:
    """The launcher's registry (GET /metrics on its port) and its refused-writes counter."""
    registry = CollectorRegistry(auto_describe=True)
    return registry, refusal_counter(registry, LAUNCHER_REFUSED_WRITES, {Label.JOB.value: job})


class WorkerMetrics:
    def __init__(self, *, rank: int, job: str, gpu_index: int | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {Label.RANK.value: str(rank), Label.JOB.value: job}
        names = list(labels)
        phase_names = [*names, Label.PHASE.value]
        r = self.registry
        self._phase_hist = Histogram(
            WorkerMetric.PHASE_SECONDS,
            "Time per step spent in each phase",
            phase_names,
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self._phase_last = Gauge(
            WorkerMetric.LAST_PHASE_SECONDS,
            "Phase time of the most recent step",
            phase_names,
            registry=r,
        )
        self._step_hist = Histogram(
            WorkerMetric.STEP_SECONDS,
            "Wall time per training step",
            names,
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self._phases = {
            phase: (
                self._phase_hist.labels(**labels, phase=phase),
                self._phase_last.labels(**labels, phase=phase),
            )
            for phase in PHASES
        }
        self._step = self._step_hist.labels(**labels)
        self._samples_per_s = Gauge(
            WorkerMetric.SAMPLES_PER_SECOND,
            "Local samples / step wall time (last step)",
            names,
            registry=r,
        ).labels(**labels)
        self._compute_samples_per_s = Gauge(
            WorkerMetric.COMPUTE_SAMPLES_PER_SECOND,
            "Local samples / compute time (last step): the rank's speed without waiting",
            names,
            registry=r,
        ).labels(**labels)
        self._batch_size = Gauge(
            WorkerMetric.BATCH_SIZE,
            "This rank's batch size b_m in the current assignment",
            names,
            registry=r,
        ).labels(**labels)
        self._global_batch = Gauge(
            WorkerMetric.GLOBAL_BATCH_SIZE,
            "Global batch size B of the current assignment",
            names,
            registry=r,
        ).labels(**labels)
        self._version = Gauge(
            WorkerMetric.ASSIGNMENT_VERSION, "Version of the assignment in use", names, registry=r
        ).labels(**labels)
        self._applied_step = Gauge(
            WorkerMetric.ASSIGNMENT_APPLIED_STEP,
            "First step that used the current assignment",
            names,
            registry=r,
        ).labels(**labels)
        self._applied_time = Gauge(
            WorkerMetric.ASSIGNMENT_APPLIED_TIME,
            "Unix time at which the current assignment took effect",
            names,
            registry=r,
        ).labels(**labels)
        self._steps = Counter(WorkerMetric.STEPS, "Training steps completed", names, registry=r).labels(
            **labels
        )
        self._samples = Counter(
            WorkerMetric.SAMPLES, "Samples processed by this rank", names, registry=r
        ).labels(**labels)
        self._loss = Gauge(
            WorkerMetric.LOSS, "Mean loss over this rank's samples in the last step", names, registry=r
        ).labels(**labels)
        self._epoch = Gauge(WorkerMetric.EPOCH, "Current epoch", names, registry=r).labels(**labels)
        self._sim_factor = Gauge(
            WorkerMetric.SIMULATED_SLOWDOWN,
            "Slow-down factor of the simulated device (dev only)",
            names,
            registry=r,
        ).labels(**labels)
        self._curvature = Gauge(
            WorkerMetric.CURVATURE,
            "Top Hessian eigenvalue of the loss on a recent batch (power iteration; 0 until estimated)",
            names,
            registry=r,
        ).labels(**labels)
        self.refused = refusal_counter(r, WorkerMetric.REFUSED_WRITES, labels)
        self.gpu_enabled = gpu_index is not None and register_gpu_collector(
            r, gpu_index=gpu_index, labels=labels
        )

    def observe_step(self, *, timing: StepTiming, samples: int, loss: float | None, epoch: int) -> None:
        for phase, seconds in (
            ("data", timing.data),
            ("compute", timing.compute),
            ("communication", timing.communication),
        ):
            histogram, gauge = self._phases[phase]
            histogram.observe(seconds)
            gauge.set(seconds)
        self._step.observe(timing.total)
        self._steps.inc()
        self._samples.inc(samples)
        if timing.total > 0:
            self._samples_per_s.set(samples / timing.total)
        if timing.compute > 0:
            self._compute_samples_per_s.set(samples / timing.compute)
        if loss is not None:
            self._loss.set(loss)
        self._epoch.set(epoch)

    def observe_assignment(
        self, *, version: int, batch_size: int, global_batch_size: int, step: int, applied_at: float
    ) -> None:
        self._version.set(version)
        self._batch_size.set(batch_size)
        self._global_batch.set(global_batch_size)
        self._applied_step.set(step)
        self._applied_time.set(applied_at)

    def observe_curvature(self, value: float) -> None:
        self._curvature.set(value)

    def observe_simulation(self, factor: float) -> None:
        self._sim_factor.set(factor)
