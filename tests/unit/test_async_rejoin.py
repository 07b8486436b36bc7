"""An asynchronous worker whose parameter server restarts: it rejoins the restored shard at its checkpointed
version; when no shard comes back at the address it exits 75 (a temporary failure the operator retries)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from paceline_worker.asynchronous import AsyncWorker
from paceline_worker.asynchronous.config import ps_config_from_env
from paceline_worker.asynchronous.ps import ParameterServer
from paceline_worker.asynchronous.ps_checkpoint import read_state, shard_file
from paceline_worker.wire import EXIT_TEMPORARY_FAILURE


def _ps(port: int, directory: Path) -> ParameterServer:
    env = {
        "PACELINE_ROLE": "ps",
        "PACELINE_PS_PORT": str(port),
        "PACELINE_METRICS_PORT": "0",
        "PACELINE_BIND_ADDRESS": "127.0.0.1",
        "PACELINE_CHECKPOINT_DIR": str(directory),
        "PACELINE_CHECKPOINT_INTERVAL_STEPS": "0",  # only when it stops
    }
    return ParameterServer(ps_config_from_env(env)).start()


def _worker(port: int, *, connect_timeout_s: int) -> AsyncWorker:
    """One asynchronous worker of a linear model on random data, its shard at `port`."""
    env = {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "PACELINE_PS_ADDRS": f"127.0.0.1:{port}",
        "PACELINE_METRICS_PORT": "0",
        "POD_IP": "127.0.0.1",
        "PACELINE_PS_CONNECT_TIMEOUT_S": str(connect_timeout_s),
    }
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 3), torch.randint(0, 2, (64,)))
    return AsyncWorker.from_env(
        nn.Linear(3, 2), data, env=env, loss_fn=nn.CrossEntropyLoss(), learning_rate=0.1, default_batch_size=8
    )


def test_a_worker_rejoins_a_restored_shard_and_gives_up_with_75_when_none_comes_back(tmp_path: Path) -> None:
    first = _ps(0, tmp_path)
    port = first.tcp_address[1]
    first.stop()  # the port is known now; start the shard that serves on it
    server = _ps(port, tmp_path)
    worker = _worker(port, connect_timeout_s=1)
    try:
        with worker:
            batches = worker.batches()
            for _ in range(5):
                worker.step(next(batches))
            assert worker.versions == [5]
            server.stop()  # checkpoints version 5 and closes
            assert read_state(shard_file(tmp_path, 0, 1)).version == 5
            server = _ps(port, tmp_path)
            assert server.restored_version == 5
            worker.step(next(batches))  # the push meets the closed connection: rejoin, gradient lost
            assert worker.versions == [5] and server.shard.version == 5
            worker.step(next(batches))
            assert worker.versions == [6] and worker.last_push[0].staleness == 0
            server.stop()
            with pytest.raises(SystemExit) as stopped:
                worker.step(next(batches))
            assert stopped.value.code == EXIT_TEMPORARY_FAILURE == 75
    finally:
        server.stop()


def test_a_worker_asked_to_stop_does_not_rejoin_a_new_shard(tmp_path: Path) -> None:
    """Pods deleted together (a resize): the shard goes first, the worker's SIGTERM comes — it must not join
    the new shard (its goodbye would count as one of the new workers')."""
    server = _ps(0, tmp_path)
    port = server.tcp_address[1]
    worker = _worker(port, connect_timeout_s=30)
    try:
        with pytest.raises(SystemExit) as stopped, worker:
            batches = worker.batches()
            worker.step(next(batches))
            server.stop()
            server = _ps(port, tmp_path)
            batch = next(batches)
            worker.core.stop.request()  # SIGTERM
            worker.step(batch)
            assert worker.stopped_by_signal and list(batches) == []
        assert stopped.value.code == 0
        assert server.status()["connectedWorkers"] == 0 and server.status()["finishedWorkers"] == []
    finally:
        server.stop()
