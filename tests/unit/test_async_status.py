"""Asynchronous jobs in the operator's pass: the stale updates the shards dropped reach
`status.asynchronous.staleUpdatesDropped`, and the momentum state persisted there survives an operator
restart (a fresh memory resumes its estimate, hyperparameters version and read positions)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jobs import job, pod
from worker_samples import worker_sample

from paceline import api, operator_metrics
from paceline.adapters import workers
from paceline.controller.decide.model import Observed, Telemetry
from paceline.controller.decide.status import live_status
from paceline.controller.observe import JobMemory, telemetry
from paceline.controller.samples import WorkerSample, parse_ps_dropped

WORLD = 2


def _sample(rank: int) -> WorkerSample:
    return worker_sample(rank)


class FakeShards:
    """The shards' /staleness and /metrics as the adapter returns them, per shard URL."""

    def __init__(self) -> None:
        self.log: list[int] = []
        self.dropped = 0

    def read_staleness(self, url: str, after: int) -> tuple[list[int], int]:
        return self.log[after:], len(self.log)

    def read_dropped(self, url: str) -> int:
        return self.dropped


@pytest.fixture
def shards(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeShards]:
    fake = FakeShards()
    monkeypatch.setattr(workers, "read_staleness", fake.read_staleness)
    monkeypatch.setattr(workers, "read_dropped", fake.read_dropped)
    monkeypatch.setattr(workers, "scrape_all", lambda urls, **_: {rank: _sample(rank) for rank in urls})
    yield fake
    operator_metrics.forget_job(namespace="ml", job="demo")  # the passes recorded the job's momentum


def _job(status: dict[str, Any]) -> dict[str, Any]:
    tj = job(mode="Asynchronous", asynchronous={"parameterServers": 1, "maxStaleness": 4})
    tj["status"] = {
        "phase": "Running",
        "attempt": 0,
        "workers": [{"rank": r} for r in range(WORLD)],
        **status,
    }
    return tj


PODS = [
    pod("demo-ps-0", role="ps", rank=0, phase="Running", podIP="127.0.0.9"),
    *(pod(f"demo-worker-{r}", rank=r, phase="Running", podIP=f"127.0.0.{r + 2}") for r in range(WORLD)),
]


def _pass(tj: dict[str, Any], memory: JobMemory) -> Telemetry:
    memory.observed_at = 0.0  # scrape now
    spec = api.parse_spec(tj["spec"])
    result = telemetry(tj, spec, PODS, None, memory)
    assert result is not None
    return result


def _status(tj: dict[str, Any], result: Telemetry) -> dict[str, Any]:
    obs = Observed(
        job=tj,
        spec=api.parse_spec(tj["spec"]),
        pods=PODS,
        service=None,
        control=None,
        now=None,  # type: ignore[arg-type]
    )
    return {**tj["status"], **live_status(obs, result)}


def test_dropped_updates_reach_the_status_and_the_state_survives_an_operator_restart(
    shards: FakeShards,
) -> None:
    memory = JobMemory()
    tj = _job({})
    first = _pass(tj, memory)  # the worker set is known from now on
    assert first.asynchronous is not None and first.asynchronous["staleUpdatesDropped"] == 0
    tj["status"] = _status(tj, first)
    shards.log = [0, 5, 6, 7] * 100  # far more staleness than the prior for 2 workers: a retune
    shards.dropped = 3
    second = _pass(tj, memory)
    assert second.asynchronous is not None and second.asynchronous["staleUpdatesDropped"] == 3
    tj["status"] = _status(tj, second)
    assert tj["status"]["asynchronous"]["staleUpdatesDropped"] == 3
    quiet = _pass(tj, memory)  # nothing changed, persisted moments ago: no status write for it
    assert quiet.asynchronous is None and _status(tj, quiet)["asynchronous"] == tj["status"]["asynchronous"]
    before = memory.momentum
    assert before is not None and before.version > 1 and before.cursors == {"uid-demo-ps-0": 400}

    restarted = JobMemory()  # the operator restarted: it reads what the status holds
    shards.log += [1] * 10
    _pass(tj, restarted)
    after = restarted.momentum
    assert after is not None
    assert after.version == before.version and after.explicit == before.explicit
    assert after.cursors == {"uid-demo-ps-0": 410}  # only the 10 new values were read
    assert after.controller.estimator.count == before.controller.estimator.count + 10
    assert after.dropped_total == 3

    fresh = JobMemory()  # without the persisted state: back to the prior, versions from 1
    tj["status"].pop("asynchronous")
    _pass(tj, fresh)
    assert fresh.momentum is not None and fresh.momentum.version == 1
    assert fresh.momentum.cursors == {"uid-demo-ps-0": 410}  # the whole log read again


def test_the_dropped_counter_is_summed_over_the_workers() -> None:
    text = (
        "# TYPE paceline_ps_dropped_updates counter\n"
        'paceline_ps_dropped_updates_total{trainingjob="j",shard="0",worker="0"} 2.0\n'
        'paceline_ps_dropped_updates_created{trainingjob="j",shard="0",worker="0"} 1.7e9\n'
        'paceline_ps_dropped_updates_total{trainingjob="j",shard="0",worker="1"} 5.0\n'
    )
    assert parse_ps_dropped(text) == 7
    assert parse_ps_dropped("") == 0
    with pytest.raises(ValueError):
        parse_ps_dropped("paceline_ps_dropped_updates_total{ 1\n")
