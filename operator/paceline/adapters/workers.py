"""HTTP to workers and parameter servers: scrape /metrics, PUT an assignment to rank 0, read staleness and
PUT momentum to the shards. Requests never go through a proxy (`http_proxy` and friends are ignored):
pods are addressed directly by IP. Payloads are the wire contract's (`paceline_worker.wire`). Every write
bears the job's control token (`Authorization: Bearer`); reads need none."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from paceline.controller.samples import WorkerSample, parse_ps_dropped, parse_worker_metrics
from paceline_worker.wire import HyperparameterUpdate, Route, authorization, parse_staleness_page

log = logging.getLogger(__name__)

MAX_SCRAPE_THREADS = 16
MAX_METRICS_BYTES = 4 * 1024 * 1024

# urllib without any proxy: pod IPs (loopback on the local cluster) must be contacted directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


def _headers(token: str | None) -> dict[str, str]:
    return {"Content-Type": "application/json", **(authorization(token) if token else {})}


def http_json(
    url: str,
    *,
    method: str = "GET",
    body: str | None = None,
    token: str | None = None,
    timeout_s: float = 1.0,
) -> Any:
    """A JSON request to a worker or parameter server (a write bearing `token`), never through a proxy;
    raises OSError/ValueError."""
    request = urllib.request.Request(
        url, data=None if body is None else body.encode(), method=method, headers=_headers(token)
    )
    with _OPENER.open(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"{}")


def put_json(url: str, body: str, *, token: str, timeout_s: float = 1.0) -> int:
    """PUT a JSON document bearing the job's control `token` to a worker endpoint (an assignment to rank
    0's /assignment, a generation to a launcher's /generation) and return the HTTP status.

    202: accepted; 409: the worker already holds this or a newer version (both fine); 400/421: rejected
    (the body says why, logged at warning); 401/403: the token was refused (logged at warning). Raises
    OSError when no HTTP answer came back (connection refused, timeout)."""
    request = urllib.request.Request(url, data=body.encode(), method="PUT", headers=_headers(token))
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        text = err.read(4096).decode("utf-8", errors="replace")
        err.close()
        if err.code != 409:
            log.warning("PUT %s answered %d: %s", url, err.code, text)
        return int(err.code)


def read_staleness(url: str, after: int) -> tuple[list[int], int] | None:
    """New τ values of one shard (base URL) since update index `after`, and the next index; None if
    unreachable."""
    try:
        return parse_staleness_page(http_json(f"{url}{Route.STALENESS}?after={after}"), after=after)
    except (OSError, ValueError):
        return None


def read_dropped(url: str, *, timeout_s: float = 1.0) -> int | None:
    """Updates one shard (base URL) dropped for staleness so far, from its /metrics; None if unreachable."""
    try:
        with _OPENER.open(urllib.request.Request(f"{url}{Route.METRICS}"), timeout=timeout_s) as response:
            body = response.read(MAX_METRICS_BYTES + 1)
        if len(body) > MAX_METRICS_BYTES:
            raise ValueError(f"metrics larger than {MAX_METRICS_BYTES} bytes")
        return parse_ps_dropped(body.decode("utf-8", errors="replace"))
    except (OSError, ValueError) as err:
        log.debug("scrape %s%s failed: %s", url, Route.METRICS, err)
        return None


def put_momentum(url: str, *, token: str, version: int, momentum: float) -> bool:
    """PUT a new explicit momentum, bearing the job's control `token`, to one shard (base URL); True when it
    holds that version (200, or 409)."""
    body = HyperparameterUpdate(version=version, learning_rate=None, momentum=momentum).to_json()
    try:
        http_json(f"{url}{Route.HYPERPARAMETERS}", method="PUT", body=body, token=token)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            log.warning("PUT %s%s refused the control token (%d)", url, Route.HYPERPARAMETERS, err.code)
        return err.code == 409
    except OSError:
        return False
    return True
