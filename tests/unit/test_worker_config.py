"""The env contract: defaults, the operator's variables, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paceline_worker.config import ConfigError, WorkerConfig, config_from_env

ASSIGNMENT = json.dumps({"version": 3, "batchSizes": [2, 6], "learningRate": 0.1, "momentum": None})


def test_operator_environment_is_read() -> None:
    config = config_from_env(
        {
            "RANK": "1",
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.5",
            "MASTER_PORT": "2345",
            "LOCAL_RANK": "0",
            "PACELINE_JOB": "j",
            "PACELINE_NAMESPACE": "ns",
            "POD_IP": "127.0.0.9",
            "PACELINE_ASSIGNMENT": ASSIGNMENT,
            "PACELINE_METRICS_PORT": "0",
            "PACELINE_CHECKPOINT_DIR": "/ckpt",
            "PACELINE_BACKEND": "gloo",
            "PACELINE_SIM_SPEED": "2",
            "PACELINE_SIM_SCHEDULE": "/tmp/s.json",
        }
    )
    assert (config.rank, config.world_size, config.master_addr, config.master_port) == (
        1,
        2,
        "127.0.0.5",
        2345,
    )
    assert (config.job, config.namespace, config.bind_address, config.metrics_port) == (
        "j",
        "ns",
        "127.0.0.9",
        0,
    )
    assert config.assignment.batch_sizes == (2, 6) and config.assignment.learning_rate == 0.1
    assert config.checkpoint_dir == Path("/ckpt") and config.backend == "gloo"
    assert config.simulation is not None and config.simulation.speed == 2.0
    assert config.simulation.schedule_path == Path("/tmp/s.json") and config.simulation.sample_cost_s is None


def test_defaults_for_a_local_single_process_run() -> None:
    config = config_from_env({}, default_batch_size=16)
    assert (config.rank, config.world_size, config.bind_address, config.metrics_port) == (
        0,
        1,
        "127.0.0.1",
        9400,
    )
    assert config.assignment.batch_sizes == (16,) and config.assignment.version == 0
    assert config.backend is None and config.checkpoint_dir is None and config.simulation is None
    assert (
        config_from_env(
            {"POD_IP": "127.0.0.3", "PACELINE_BIND_ADDRESS": "127.0.0.4"}, default_batch_size=1
        ).bind_address
        == "127.0.0.4"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "PACELINE_ASSIGNMENT is not set"),
        ({"RANK": "2", "WORLD_SIZE": "2", "PACELINE_ASSIGNMENT": ASSIGNMENT}, "RANK=2"),
        (
            {"WORLD_SIZE": "3", "PACELINE_ASSIGNMENT": ASSIGNMENT},
            "PACELINE_ASSIGNMENT: batchSizes has 2 entries",
        ),
        ({"WORLD_SIZE": "x"}, "WORLD_SIZE='x' is not an integer"),
        (
            {"WORLD_SIZE": "2", "PACELINE_ASSIGNMENT": ASSIGNMENT, "PACELINE_BACKEND": "mpi"},
            "use gloo or nccl",
        ),
        ({"WORLD_SIZE": "2", "PACELINE_ASSIGNMENT": ASSIGNMENT, "PACELINE_SIM_SPEED": "0"}, "must be > 0"),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config_from_env(env)


def test_device_and_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU → gloo; a GPU per local rank → NCCL; ranks sharing GPUs → gloo on CUDA; explicit choices win."""
    import torch

    from paceline_worker.worker import pick_device

    def cfg(**env: str) -> WorkerConfig:
        return config_from_env(
            {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", **env},
            default_batch_size=4,
        )

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(cfg()) == (torch.device("cpu"), "gloo")
    with pytest.raises(RuntimeError, match="needs CUDA"):
        pick_device(cfg(PACELINE_BACKEND="nccl"))
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        pick_device(cfg(PACELINE_DEVICE="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device(cfg()) == (torch.device("cuda", 1), "nccl")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device(cfg()) == (torch.device("cuda", 0), "gloo")
    assert pick_device(cfg(PACELINE_DEVICE="cpu")) == (torch.device("cpu"), "gloo")
