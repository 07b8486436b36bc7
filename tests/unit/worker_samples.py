"""A worker's scrape as the operator parses it, for tests that need one without a worker."""

from __future__ import annotations

from typing import Any

from paceline.controller.samples import WorkerSample


def worker_sample(rank: int, **fields: Any) -> WorkerSample:
    """Rank `rank` after 10 steps of 1 sample at 100 samples/s, no time spent; `fields` override."""
    values: dict[str, Any] = {
        "rank": rank,
        "job": "demo",
        "timestamp": 0.0,
        "steps_total": 10,
        "samples_total": 10,
        "batch_size": 8,
        "global_batch_size": 16,
        "assignment_version": 1,
        "samples_per_second": 100.0,
        "compute_samples_per_second": 100.0,
        **dict.fromkeys(
            (
                "data_seconds",
                "compute_seconds",
                "communication_seconds",
                "step_seconds",
                "last_compute_seconds",
            ),
            0.0,
        ),
    }
    return WorkerSample(**{**values, **fields})
