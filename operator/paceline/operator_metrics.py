"""The operator's own Prometheus metrics (names prefixed paceline_operator_), in a module-level registry.

Job labels are `trainingjob_namespace` and `trainingjob`: plain `job`/`namespace` would clash with the
target labels Prometheus adds to every scraped series. `record_control` records one `ControlOutcome`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from paceline.balancer import StragglerStatus
from paceline.controller.rebalance import ControlOutcome

REGISTRY = CollectorRegistry(auto_describe=True)
_JOB = ["trainingjob_namespace", "trainingjob"]
_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REBALANCES = Counter(
    "paceline_operator_rebalances", "New batch-share assignments published", _JOB, registry=REGISTRY
)
PREDICTED_STEP = Gauge(
    "paceline_operator_predicted_step_seconds",
    "Model-predicted E[max compute seconds per step] at the shares in force",
    _JOB,
    registry=REGISTRY,
)
MEASURED_STEP = Gauge(
    "paceline_operator_measured_step_seconds",
    "Measured wall seconds per step (mean over ranks, last ~10 s)",
    _JOB,
    registry=REGISTRY,
)
THROUGHPUT = Gauge(
    "paceline_operator_samples_per_second", "Measured job throughput (Σ ranks)", _JOB, registry=REGISTRY
)
EFFICIENCY = Gauge(
    "paceline_operator_efficiency_ratio",
    "Achieved ÷ ideal throughput (Σ each worker's own capacity)",
    _JOB,
    registry=REGISTRY,
)
STRAGGLER = Gauge(
    "paceline_operator_worker_straggler",
    "1 while the rank is a persistent straggler, else 0",
    [*_JOB, "rank"],
    registry=REGISTRY,
)
SLOWDOWN = Gauge(
    "paceline_operator_worker_slowdown_ratio",
    "Recent step time ÷ the rank's usual step time (1 when healthy)",
    [*_JOB, "rank"],
    registry=REGISTRY,
)
MOMENTUM = Gauge(
    "paceline_operator_momentum",
    "Momentum in force (Asynchronous mode): component explicit (what the shards run), implicit (measured "
    "from staleness) or total",
    [*_JOB, "component"],
    registry=REGISTRY,
)
MOMENTUM_RETUNES = Counter(
    "paceline_operator_momentum_retunes",
    "New explicit-momentum versions published to the parameter servers",
    _JOB,
    registry=REGISTRY,
)
MOMENTUM_COMPONENTS = ("explicit", "implicit", "total")
RECONCILE_SECONDS = Histogram(
    "paceline_operator_reconcile_duration_seconds",
    "Wall time of one reconcile of one TrainingJob",
    buckets=_RECONCILE_BUCKETS,
    registry=REGISTRY,
)

_lock = threading.Lock()
_ranks: dict[tuple[str, str], set[str]] = {}  # per job, the rank label values set (for `forget_job`)


def record_rebalance(*, namespace: str, job: str) -> None:
    REBALANCES.labels(namespace, job).inc()


def record_step_times(
    *, namespace: str, job: str, predicted_s: float | None, measured_s: float | None
) -> None:
    """Set the predicted/measured step-time gauges (a None leaves the gauge as it was)."""
    if predicted_s is not None:
        PREDICTED_STEP.labels(namespace, job).set(predicted_s)
    if measured_s is not None:
        MEASURED_STEP.labels(namespace, job).set(measured_s)


def record_throughput(
    *, namespace: str, job: str, samples_per_second: float | None, efficiency: float | None
) -> None:
    if samples_per_second is not None:
        THROUGHPUT.labels(namespace, job).set(samples_per_second)
    if efficiency is not None:
        EFFICIENCY.labels(namespace, job).set(efficiency)


def record_stragglers(*, namespace: str, job: str, stragglers: Mapping[int, StragglerStatus]) -> None:
    """Straggler (0/1) and slowdown gauges per rank."""
    with _lock:
        known = _ranks.setdefault((namespace, job), set())
        for rank, status in stragglers.items():
            label = str(rank)
            known.add(label)
            STRAGGLER.labels(namespace, job, label).set(1.0 if status.is_straggler else 0.0)
            SLOWDOWN.labels(namespace, job, label).set(status.slowdown)


def record_control(*, namespace: str, job: str, outcome: ControlOutcome) -> None:
    """Record everything one `control_step` produced."""
    if outcome.new_assignment is not None:
        record_rebalance(namespace=namespace, job=job)
    record_step_times(
        namespace=namespace, job=job, predicted_s=outcome.predicted_step_s, measured_s=outcome.measured_step_s
    )
    record_throughput(
        namespace=namespace,
        job=job,
        samples_per_second=outcome.samples_per_second,
        efficiency=outcome.efficiency,
    )
    record_stragglers(namespace=namespace, job=job, stragglers=outcome.stragglers)


def record_momentum(*, namespace: str, job: str, momentum: Mapping[str, str], retuned: bool) -> None:
    """The momentum components of `status.momentum` (decimal strings) and, when it changed, one retune."""
    for component in MOMENTUM_COMPONENTS:
        if component in momentum:
            MOMENTUM.labels(namespace, job, component).set(float(momentum[component]))
    if retuned:
        MOMENTUM_RETUNES.labels(namespace, job).inc()


def observe_reconcile(seconds: float) -> None:
    RECONCILE_SECONDS.observe(seconds)


@contextmanager
def time_reconcile() -> Iterator[None]:
    """`with time_reconcile(): reconcile(...)` observes the duration, also when it raises."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_reconcile(time.perf_counter() - started)


def forget_job(*, namespace: str, job: str) -> None:
    """Drop a deleted job's series."""
    with _lock:
        ranks = _ranks.pop((namespace, job), set())
    for metric in (REBALANCES, PREDICTED_STEP, MEASURED_STEP, THROUGHPUT, EFFICIENCY, MOMENTUM_RETUNES):
        with suppress(KeyError):
            metric.remove(namespace, job)
    for component in MOMENTUM_COMPONENTS:
        with suppress(KeyError):
            MOMENTUM.remove(namespace, job, component)
    for metric in (STRAGGLER, SLOWDOWN):
        for rank in ranks:
            with suppress(KeyError):
                metric.remove(namespace, job, rank)


def serve(address: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve REGISTRY at http://address:port/metrics in a daemon thread; port 0 picks a free port
    (read it from `server.server_port`). Stop with `server.shutdown(); server.server_close()`."""
    server, thread = start_http_server(port, addr=address, registry=REGISTRY)
    return server, thread
