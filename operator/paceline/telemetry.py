"""Worker telemetry I/O: scrape a worker's Prometheus `/metrics`, push an assignment to rank 0.

Parsing (`parse_worker_metrics`) is pure and separate from the HTTP calls. Requests never go through a
proxy (`http_proxy` and friends are ignored): workers are addressed directly by pod IP.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

PREFIX = "paceline_worker_"
MAX_SCRAPE_THREADS = 16
MAX_METRICS_BYTES = 4 * 1024 * 1024

# urllib without any proxy: pod IPs (loopback on the local cluster) must be contacted directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def _values(text: str) -> dict[tuple[str, str], tuple[float, dict[str, str]]]:
    """(sample name, phase label or "") → (value, labels) of every paceline_worker_ sample."""
    out: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            out[(sample.name, sample.labels.get("phase", ""))] = (float(sample.value), dict(sample.labels))
    return out


def parse_worker_metrics(text: str, *, timestamp: float) -> WorkerSample:
    """Parse a worker's exposition text; raises ValueError when a required metric is missing or bad."""
    try:
        values = _values(text)
    except (ValueError, TypeError, KeyError, IndexError) as err:  # the parser's errors on malformed text
        raise ValueError(f"malformed metrics exposition: {err}") from err

    def get(name: str, phase: str = "") -> float:
        found = values.get((PREFIX + name, phase))
        if found is None:
            where = f"{{phase={phase!r}}}" if phase else ""
            raise ValueError(f"metric {PREFIX}{name}{where} missing")
        if not math.isfinite(found[0]):
            raise ValueError(f"metric {PREFIX}{name} is not finite: {found[0]}")
        return found[0]

    steps = values.get((PREFIX + "steps_total", ""))
    if steps is None:
        raise ValueError(f"metric {PREFIX}steps_total missing: not a paceline worker?")
    labels = steps[1]
    try:
        rank = int(labels["rank"])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{PREFIX}steps_total has no integer rank label: {labels}") from err
    simulated = values.get((PREFIX + "simulated_slowdown_factor", ""))
    return WorkerSample(
        rank=rank,
        job=labels.get("job", ""),
        timestamp=timestamp,
        steps_total=int(get("steps_total")),
        samples_total=int(get("samples_total")),
        data_seconds=get("phase_seconds_sum", "data"),
        compute_seconds=get("phase_seconds_sum", "compute"),
        communication_seconds=get("phase_seconds_sum", "communication"),
        step_seconds=get("step_seconds_sum"),
        last_compute_seconds=get("last_phase_seconds", "compute"),
        batch_size=int(get("batch_size")),
        global_batch_size=int(get("global_batch_size")),
        assignment_version=int(get("assignment_version")),
        samples_per_second=get("samples_per_second"),
        compute_samples_per_second=get("compute_samples_per_second"),
        # the gauge exists from the start with value 0; a real factor is > 0
        simulated_slowdown_factor=simulated[0] if simulated is not None and simulated[0] > 0 else None,
    )


def scrape(
    url: str, *, timeout_s: float = 1.0, clock: Callable[[], float] = time.time
) -> WorkerSample | None:
    """GET a worker's /metrics URL and parse it; None (logged at debug) when unreachable or not parseable."""
    try:
        with _OPENER.open(urllib.request.Request(url, method="GET"), timeout=timeout_s) as response:
            body = response.read(MAX_METRICS_BYTES + 1)
        if len(body) > MAX_METRICS_BYTES:
            raise ValueError(f"metrics larger than {MAX_METRICS_BYTES} bytes")
        return parse_worker_metrics(body.decode("utf-8", errors="replace"), timestamp=clock())
    except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts and resets are OSErrors
        log.debug("scrape %s failed: %s", url, err)
        return None


def scrape_all(
    urls: Mapping[int, str], *, timeout_s: float = 1.0, clock: Callable[[], float] = time.time
) -> dict[int, WorkerSample]:
    """Scrape every rank's /metrics concurrently; ranks that failed are absent from the result.

    Keys are the ranks of `urls`; a sample whose `rank` label disagrees with its key is dropped (a pod
    address reused by another rank)."""
    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_SCRAPE_THREADS, len(urls))) as pool:
        futures = {
            rank: pool.submit(scrape, url, timeout_s=timeout_s, clock=clock) for rank, url in urls.items()
        }
        results = {rank: future.result() for rank, future in futures.items()}
    out: dict[int, WorkerSample] = {}
    for rank, sample in results.items():
        if sample is None:
            continue
        if sample.rank != rank:
            log.warning("%s reports rank %d, expected rank %d; ignored", urls[rank], sample.rank, rank)
            continue
        out[rank] = sample
    return out


def http_json(url: str, *, method: str = "GET", body: str | None = None, timeout_s: float = 1.0) -> Any:
    """A JSON request to a worker or parameter server, never through a proxy; raises OSError/ValueError."""
    request = urllib.request.Request(
        url,
        data=None if body is None else body.encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with _OPENER.open(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"{}")


def push_assignment(url: str, assignment_json: str, *, timeout_s: float = 1.0) -> int:
    """PUT the assignment JSON to rank 0's /assignment URL and return the HTTP status.

    202: accepted (applied at the next step boundary); 409: rank 0 already has this or a newer version
    (both fine); 400/421: rejected (the body says why, logged at warning). Raises OSError when no HTTP
    answer came back (connection refused, timeout)."""
    request = urllib.request.Request(
        url, data=assignment_json.encode(), method="PUT", headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        body = err.read(4096).decode("utf-8", errors="replace")
        err.close()
        if err.code != 409:
            log.warning("PUT %s answered %d: %s", url, err.code, body)
        return int(err.code)
