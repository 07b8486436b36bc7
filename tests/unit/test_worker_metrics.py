"""Worker metrics in their own registry, with rank/job labels; no GPU metrics without NVML."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from paceline_worker.metrics import StepTiming, WorkerMetrics


def _samples(metrics: WorkerMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    result: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            result.setdefault(sample.name, []).append((sample.labels, sample.value))
    return result


def test_step_and_assignment_metrics() -> None:
    metrics = WorkerMetrics(rank=2, job="demo")
    metrics.observe_assignment(version=4, batch_size=6, global_batch_size=20, step=17, applied_at=1.5e9)
    for loss in (0.9, 0.7):
        metrics.observe_step(
            timing=StepTiming(data=0.01, compute=0.2, communication=0.09), samples=6, loss=loss, epoch=3
        )
    samples = _samples(metrics)
    labels = {"rank": "2", "trainingjob": "demo"}
    assert samples["paceline_worker_assignment_version"] == [(labels, 4.0)]
    assert samples["paceline_worker_assignment_applied_step"] == [(labels, 17.0)]
    assert samples["paceline_worker_steps_total"] == [(labels, 2.0)]
    assert samples["paceline_worker_samples_total"] == [(labels, 12.0)]
    assert samples["paceline_worker_loss"] == [(labels, 0.7)]
    assert samples["paceline_worker_samples_per_second"][0][1] == pytest.approx(6 / 0.3)
    assert samples["paceline_worker_compute_samples_per_second"][0][1] == pytest.approx(6 / 0.2)
    compute_sum = [v for lab, v in samples["paceline_worker_phase_seconds_sum"] if lab["phase"] == "compute"]
    assert compute_sum == [pytest.approx(0.4)]


def test_gpu_metrics_absent_without_a_gpu() -> None:
    metrics = WorkerMetrics(rank=0, job="demo", gpu_index=0)  # no NVML library / driver on this machine
    assert not metrics.gpu_enabled
    assert not [name for name in _samples(metrics) if "gpu" in name]
