"""A worker's Prometheus exposition parsed into one `WorkerSample` (pure; the metric names are the wire
contract's, `paceline_worker.wire.WorkerMetric`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from paceline_worker.wire import Label, PsMetric, WorkerMetric

PREFIX = "paceline_worker_"


@dataclass(frozen=True, kw_only=True)
class WorkerSample:
    """One scrape of one worker. Counters and `*_seconds` phase sums are cumulative since the worker
    started (they restart at 0 when the process restarts)."""

    rank: int
    job: str
    timestamp: float  # Unix seconds when the scrape completed (the caller's clock)
    steps_total: int
    samples_total: int
    data_seconds: float  # Σ data phase seconds
    compute_seconds: float  # Σ compute phase seconds (forward, backward, simulated padding, update)
    communication_seconds: float  # Σ communication phase seconds (includes waiting for slower ranks)
    step_seconds: float  # Σ wall seconds per step
    last_compute_seconds: float  # compute seconds of the last step
    batch_size: int  # b_m of the assignment in use
    global_batch_size: int  # B of the assignment in use
    assignment_version: int
    samples_per_second: float  # last step: local samples / step wall time
    compute_samples_per_second: float  # last step: local samples / compute time
    simulated_slowdown_factor: float | None = None  # dev-only simulation; None when not simulated
    curvature: float | None = None  # asynchronous workers: top Hessian eigenvalue estimate, None before one
    gpu_memory_bytes: float | None = None  # NVML's total memory of the rank's GPU; None without a GPU


def _values(text: str) -> dict[tuple[str, str], tuple[float, dict[str, str]]]:
    """(sample name, phase label or "") → (value, labels) of every paceline_worker_ sample."""
    out: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            out[(sample.name, sample.labels.get(Label.PHASE, ""))] = (
                float(sample.value),
                dict(sample.labels),
            )
    return out


def parse_worker_metrics(text: str, *, timestamp: float) -> WorkerSample:
    """Parse a worker's exposition text; raises ValueError when a required metric is missing or bad."""
    try:
        values = _values(text)
    except (ValueError, TypeError, KeyError, IndexError) as err:  # the parser's errors on malformed text
        raise ValueError(f"malformed metrics exposition: {err}") from err

    def get(name: str, phase: str = "") -> float:
        found = values.get((name, phase))
        if found is None:
            raise ValueError(f"metric {name}{f'{{phase={phase!r}}}' if phase else ''} missing")
        if not math.isfinite(found[0]):
            raise ValueError(f"metric {name} is not finite: {found[0]}")
        return found[0]

    steps = values.get((f"{WorkerMetric.STEPS}_total", ""))
    if steps is None:
        raise ValueError(f"metric {WorkerMetric.STEPS}_total missing: not a paceline worker?")
    labels = steps[1]
    try:
        rank = int(labels[Label.RANK])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{WorkerMetric.STEPS}_total has no integer rank label: {labels}") from err
    simulated = values.get((WorkerMetric.SIMULATED_SLOWDOWN, ""))
    curvature = values.get((WorkerMetric.CURVATURE, ""))
    gpu_memory = values.get((WorkerMetric.GPU_MEMORY_TOTAL, ""))
    return WorkerSample(
        rank=rank,
        job=labels.get(Label.JOB, ""),
        timestamp=timestamp,
        steps_total=int(get(f"{WorkerMetric.STEPS}_total")),
        samples_total=int(get(f"{WorkerMetric.SAMPLES}_total")),
        data_seconds=get(f"{WorkerMetric.PHASE_SECONDS}_sum", "data"),
        compute_seconds=get(f"{WorkerMetric.PHASE_SECONDS}_sum", "compute"),
        communication_seconds=get(f"{WorkerMetric.PHASE_SECONDS}_sum", "communication"),
        step_seconds=get(f"{WorkerMetric.STEP_SECONDS}_sum"),
        last_compute_seconds=get(WorkerMetric.LAST_PHASE_SECONDS, "compute"),
        batch_size=int(get(WorkerMetric.BATCH_SIZE)),
        global_batch_size=int(get(WorkerMetric.GLOBAL_BATCH_SIZE)),
        assignment_version=int(get(WorkerMetric.ASSIGNMENT_VERSION)),
        samples_per_second=get(WorkerMetric.SAMPLES_PER_SECOND),
        compute_samples_per_second=get(WorkerMetric.COMPUTE_SAMPLES_PER_SECOND),
        # the gauge exists from the start with value 0; a real factor is > 0
        simulated_slowdown_factor=simulated[0] if simulated is not None and simulated[0] > 0 else None,
        curvature=curvature[0] if curvature is not None and 0 < curvature[0] < math.inf else None,
        gpu_memory_bytes=gpu_memory[0] if gpu_memory is not None and 0 < gpu_memory[0] < math.inf else None,
    )


def parse_ps_dropped(text: str) -> int:
    """A parameter-server shard's exposition → updates it dropped for staleness above maxStaleness (the
    per-worker counters summed; 0 before any drop). Raises ValueError on malformed text."""
    try:
        return int(
            sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == f"{PsMetric.DROPPED}_total"
            )
        )
    except (TypeError, KeyError, IndexError) as err:
        raise ValueError(f"malformed metrics exposition: {err}") from err
