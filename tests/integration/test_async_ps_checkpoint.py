"""A parameter-server shard SIGKILLed mid-run and started again: it restores its checkpoint (model version,
parameters, momentum buffer), the real workers reconnect and training continues from that version."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from test_async_ps import LOOPBACK, REPO, Processes, free_port, request

from paceline_dev.control_token import control_token_file
from paceline_worker.asynchronous.ps_checkpoint import read_state, shard_file

pytestmark = pytest.mark.integration
STEPS = 150
WORKERS = 2
INTERVAL = 20


def _status(url: str) -> dict | None:
    try:
        status, body = request("GET", url + "/status")
    except OSError:
        return None
    return body if status == 200 else None


def _wait(what: str, check, logs: str | None = None, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{logs or ''}")


def test_a_killed_shard_restores_its_checkpoint_and_training_continues(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    checkpoints = tmp_path / "checkpoints"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PACELINE_")}
    base.update(
        {
            "PYTHONPATH": str(REPO / "worker-image"),
            "PACELINE_PS_ADDRS": f"{LOOPBACK}:{port}",
            "WORLD_SIZE": str(WORKERS),
            "PACELINE_JOB": "itest",
            "PACELINE_TOKEN_FILE": str(control_token_file(tmp_path)),
            "OMP_NUM_THREADS": "1",
            "POD_IP": LOOPBACK,
        }
    )
    ps_env = {
        "PACELINE_ROLE": "ps",
        "PACELINE_PS_SHARD": "0",
        "PACELINE_METRICS_PORT": str(http_port),
        "PACELINE_PS_LINGER_S": "60",
        "PACELINE_CHECKPOINT_DIR": str(checkpoints),
        "PACELINE_CHECKPOINT_INTERVAL_STEPS": str(INTERVAL),
    }
    processes = Processes(tmp_path / "logs", base)
    spawn = processes.spawn

    url = f"http://{LOOPBACK}:{http_port}"
    ps_command = [sys.executable, "-m", "paceline_worker.asynchronous.ps"]
    try:
        first = spawn("ps", ps_command, ps_env)
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
                    "--momentum",  # stable with two asynchronous workers (0.9 is at the edge: may not learn)
                    "0.5",
                    "--result",
                    str(tmp_path / f"worker{r}.json"),
                ],
                {
                    "RANK": str(r),
                    "PACELINE_METRICS_PORT": "0",
                    "PACELINE_SIM_SPEED": "1",
                    "PACELINE_SIM_SAMPLE_COST_S": "0.003",
                },
            )
            for r in range(WORKERS)
        ]
        # mid-run, after a few checkpoints: kill the shard without warning
        _wait(
            "training under way with checkpoints",
            lambda: (s := _status(url)) and s["version"] >= 4 * INTERVAL and s["checkpoint"]["savedVersion"],
            processes.logs(),
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert all(w.poll() is None for w in workers), (
            processes.logs()
        )  # the workers wait for it to come back
        saved = read_state(shard_file(checkpoints, 0, 1))
        assert saved.version >= INTERVAL
        assert saved.version < WORKERS * STEPS, "the kill must land mid-run"

        spawn("ps", ps_command, ps_env)
        restarted = _wait("the restarted shard", lambda: _status(url), processes.logs())
        assert restarted["checkpoint"]["restoredVersion"] == saved.version
        assert restarted["version"] >= saved.version  # never behind the last checkpoint
        assert (
            f"restored from {checkpoints} at model version {saved.version}"
            in (processes.logs_dir / "ps.log").read_text()
        )

        codes = [w.wait(timeout=240) for w in workers]
        assert codes == [0] * WORKERS, processes.logs()
        results = [json.loads((tmp_path / f"worker{r}.json").read_text()) for r in range(WORKERS)]
        assert [r["steps"] for r in results] == [STEPS] * WORKERS
        assert min(r["accuracy"] for r in results) > 0.5, results  # it learned, across the restart
        for r in range(WORKERS):
            assert (
                "rejoined PS shard 0 at model version" in (processes.logs_dir / f"worker{r}.log").read_text()
            )

        updates = request("GET", url + "/staleness?after=0")[1]["updates"]
        assert updates, processes.logs()
        assert updates[0]["index"] == saved.version  # the update sequence went on from the checkpoint
        assert [u["index"] for u in updates] == list(range(saved.version, saved.version + len(updates)))
        final = _status(url)
        assert final is not None
        processes.procs[-1].send_signal(signal.SIGTERM)
        assert processes.procs[-1].wait(timeout=30) == 0
        assert read_state(shard_file(checkpoints, 0, 1)).version == final["version"]  # the stop checkpoint
    finally:
        processes.kill_all()
