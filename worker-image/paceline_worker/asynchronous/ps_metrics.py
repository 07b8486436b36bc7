"""Prometheus metrics of one parameter-server shard (names prefixed paceline_ps_; labels job, shard)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..metrics import refusal_counter
from ..wire import Label, PsMetric
from .hyperparameters import Hyperparameters
from .shard import AppliedUpdate

# τ is an integer: buckets at every integer up to 16 make the histogram exact there (le is inclusive).
STALENESS_BUCKETS = (*range(17), 24, 32, 48, 64, 96, 128, 256, 512, 1024)


class PsMetrics:
    def __init__(self, *, job: str, shard: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._labels = {Label.JOB.value: job, Label.SHARD.value: str(shard)}
        names = list(self._labels)
        r = self.registry
        self._staleness = Histogram(
            PsMetric.STALENESS,
            "Staleness τ of each applied update: model versions between the worker's read and its write",
            [*names, Label.WORKER.value],
            buckets=[float(b) for b in STALENESS_BUCKETS],
            registry=r,
        )
        self._updates = Counter(
            PsMetric.UPDATES, "Updates applied, per worker", [*names, Label.WORKER.value], registry=r
        )
        self._dropped = Counter(
            PsMetric.DROPPED,
            "Updates dropped because their staleness exceeded maxStaleness, per worker",
            [*names, Label.WORKER.value],
            registry=r,
        )
        self._version = Gauge(PsMetric.MODEL_VERSION, "Current model version", names, registry=r).labels(
            **self._labels
        )
        self._momentum = Gauge(
            PsMetric.MOMENTUM, "Explicit momentum in the update rule", names, registry=r
        ).labels(**self._labels)
        self._learning_rate = Gauge(
            PsMetric.LEARNING_RATE, "Learning rate in the update rule", names, registry=r
        ).labels(**self._labels)
        self._hyper_version = Gauge(
            PsMetric.HYPERPARAMETERS_VERSION,
            "Version of the hyperparameters in force",
            names,
            registry=r,
        ).labels(**self._labels)
        self._parameters = Gauge(
            PsMetric.PARAMETERS, "Number of parameter values held by this shard", names, registry=r
        ).labels(**self._labels)
        self._workers = Gauge(
            PsMetric.CONNECTED_WORKERS, "Workers with an open connection", names, registry=r
        ).labels(**self._labels)
        self.refused = refusal_counter(r, PsMetric.REFUSED_WRITES, self._labels)

    def observe_update(self, update: AppliedUpdate) -> None:
        labels = {**self._labels, Label.WORKER.value: update.worker}
        if update.dropped:
            self._dropped.labels(**labels).inc()
            return
        self._staleness.labels(**labels).observe(update.staleness)
        self._updates.labels(**labels).inc()
        self._version.set(update.version)

    def observe_version(self, version: int) -> None:
        self._version.set(version)

    def observe_hyperparameters(self, hyper: Hyperparameters) -> None:
        self._momentum.set(hyper.momentum)
        self._learning_rate.set(hyper.learning_rate)
        self._hyper_version.set(hyper.version)

    def observe_parameters(self, count: int) -> None:
        self._parameters.set(count)

    def observe_connections(self, count: int) -> None:
        self._workers.set(count)
