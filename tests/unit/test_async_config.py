"""The asynchronous mode's environment contract."""

from __future__ import annotations

import pytest

from paceline_worker.asynchronous import ps_config_from_env, worker_config_from_env, worker_indices
from paceline_worker.config import ConfigError

ADDRS = "127.0.0.1:29600,127.0.0.1:29601"


def test_ps_takes_its_port_from_its_own_entry_in_the_address_list() -> None:
    config = ps_config_from_env(
        {
            "PACELINE_ROLE": "ps",
            "PACELINE_PS_ADDRS": ADDRS,
            "PACELINE_PS_SHARD": "1",
            "WORLD_SIZE": "4",
            "PACELINE_HYPERPARAMETERS": '{"version": 2, "learningRate": 0.1, "momentum": null}',
        }
    )
    assert (config.shard, config.shards, config.port, config.metrics_port, config.workers) == (
        1,
        2,
        29601,
        9400,
        4,
    )
    assert config.hyperparameters is not None and config.hyperparameters.momentum is None
    assert ps_config_from_env({"PACELINE_PS_PORT": "0"}).port == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACELINE_ROLE": "worker"}, "PACELINE_ROLE"),
        ({"PACELINE_ROLE": "learner"}, "PACELINE_ROLE"),
        ({"PACELINE_PS_ADDRS": ADDRS, "PACELINE_PS_SHARD": "2"}, "PACELINE_PS_SHARD"),
        ({"PACELINE_HYPERPARAMETERS": '{"version": 1, "momentum": 2}'}, "PACELINE_HYPERPARAMETERS"),
        ({"PACELINE_METRICS_PORT": "70000"}, "PACELINE_METRICS_PORT"),
    ],
)
def test_bad_ps_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ps_config_from_env(env)


def test_worker_environment() -> None:
    env = {
        "PACELINE_PS_ADDRS": ADDRS,
        "RANK": "1",
        "WORLD_SIZE": "2",
        "PACELINE_ASSIGNMENT": '{"version": 1, "batchSizes": [8, 24]}',
        "PACELINE_SIM_SPEED": "2",
        "PACELINE_SIM_DISTRIBUTION": "exponential",
    }
    config = worker_config_from_env(env)
    assert config.base.simulation is not None
    assert (config.batch_size, len(config.ps_addrs), config.base.simulation.exponential) == (24, 2, True)
    with pytest.raises(ConfigError, match="PACELINE_PS_ADDRS"):
        worker_config_from_env({**env, "PACELINE_PS_ADDRS": ""})
    with pytest.raises(ConfigError, match="PACELINE_ROLE"):
        worker_config_from_env({**env, "PACELINE_ROLE": "ps"})
    with pytest.raises(ConfigError, match="PACELINE_SIM_DISTRIBUTION"):
        worker_config_from_env({**env, "PACELINE_SIM_DISTRIBUTION": "normal"})
    assert worker_config_from_env({"PACELINE_PS_ADDRS": ADDRS}, default_batch_size=5).batch_size == 5


def test_workers_split_each_epoch_without_overlap() -> None:
    parts = [worker_indices(size=23, rank=r, world_size=3, seed=7, epoch=2) for r in range(3)]
    assert sorted(i for part in parts for i in part) == list(range(23))
    assert parts[0] != worker_indices(size=23, rank=0, world_size=3, seed=7, epoch=3)
