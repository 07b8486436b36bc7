"""Real asynchronous training: 2 PS shard processes + 2 worker processes running
examples/train_digits_async.py; a live momentum change over HTTP; every update's τ checked against the
versions each worker read."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from test_async_ps import LOOPBACK, REPO, Processes, free_port, request

from paceline_dev.control_token import control_token_file

pytestmark = pytest.mark.integration
STEPS = 120
SHARDS = 2
WORKERS = 2


def _scrape(url: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = request("GET", url)
    assert status == 200
    return {
        (s.name, s.labels.get("worker", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name
        in ("paceline_ps_update_staleness_count", "paceline_ps_update_staleness_sum", "paceline_ps_momentum")
    }


def test_two_workers_two_shards_live_momentum(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(SHARDS)]
    http_ports = [free_port() for _ in range(SHARDS)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PACELINE_")}
    base.update(
        {
            "PYTHONPATH": str(REPO / "worker-image"),
            "PACELINE_PS_ADDRS": ",".join(f"{LOOPBACK}:{p}" for p in ports),
            "WORLD_SIZE": str(WORKERS),
            "PACELINE_JOB": "itest",
            "PACELINE_TOKEN_FILE": str(control_token_file(tmp_path)),
            "OMP_NUM_THREADS": "1",
            "POD_IP": LOOPBACK,
        }
    )
    processes = Processes(tmp_path / "logs", base)
    spawn = processes.spawn

    try:
        shards = [
            spawn(
                f"ps{s}",
                [sys.executable, "-m", "paceline_worker.asynchronous.ps"],
                {
                    "PACELINE_ROLE": "ps",
                    "PACELINE_PS_SHARD": str(s),
                    "PACELINE_METRICS_PORT": str(http_ports[s]),
                    "PACELINE_PS_LINGER_S": "60",
                },
            )
            for s in range(SHARDS)
        ]
        workers = [
            spawn(
                f"worker{r}",
                [
                    sys.executable,
                    "examples/train_digits_async.py",
                    "--max-steps",
                    str(STEPS),
                    "--batch-size",
                    "16",
                    "--result",
                    str(tmp_path / f"worker{r}.json"),
                ],
                {
                    "RANK": str(r),
                    "PACELINE_METRICS_PORT": "0",
                    "PACELINE_SIM_SPEED": "1",
                    "PACELINE_SIM_SAMPLE_COST_S": "0.002",
                },
            )
            for r in range(WORKERS)
        ]
        urls = [f"http://{LOOPBACK}:{p}" for p in http_ports]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # retune once training is under way
            try:
                if request("GET", urls[0] + "/status")[1]["version"] >= 30:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        applied_at = []
        for url in urls:
            status, body = request("PUT", url + "/hyperparameters", '{"version": 1, "momentum": 0.3}')
            assert status == 200, body
            applied_at.append(body["appliedAtModelVersion"])
        codes = [w.wait(timeout=120) for w in workers]
        assert codes == [0] * WORKERS, processes.logs()
        results = [json.loads((tmp_path / f"worker{r}.json").read_text()) for r in range(WORKERS)]
        assert [r["steps"] for r in results] == [STEPS] * WORKERS
        assert min(r["accuracy"] for r in results) > 0.5, results  # it learned

        for shard, url in enumerate(urls):
            updates = request("GET", url + "/staleness?after=0")[1]["updates"]
            assert [u["index"] for u in updates] == list(range(WORKERS * STEPS))  # one version per update
            assert 0 < applied_at[shard] < WORKERS * STEPS, "the change must land mid-run"
            assert {u["momentum"] for u in updates[: applied_at[shard]]} == {0.9}
            assert {u["momentum"] for u in updates[applied_at[shard] :]} == {0.3}
            by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for update in updates:
                by_worker[update["worker"]].append(update)
            for mine in by_worker.values():
                # each push read exactly the version its previous push returned: τ = versions in between
                assert [u["readVersion"] for u in mine[1:]] == [u["index"] + 1 for u in mine[:-1]]
                assert [u["staleness"] for u in mine] == [u["index"] - u["readVersion"] for u in mine]
            assert max(u["staleness"] for u in updates) >= 1  # they really overlapped
            samples = _scrape(url + "/metrics")
            assert samples[("paceline_ps_momentum", "")] == 0.3
            for worker in ("0", "1"):
                mine = by_worker[worker]
                assert samples[("paceline_ps_update_staleness_count", worker)] == len(mine) == STEPS
                assert samples[("paceline_ps_update_staleness_sum", worker)] == sum(
                    u["staleness"] for u in mine
                )
        for ps in shards:
            ps.send_signal(signal.SIGTERM)
        assert [ps.wait(timeout=20) for ps in shards] == [0] * SHARDS
    finally:
        processes.kill_all()
