"""Reinforcement mode: the PACELINE_RL settings and the processes' environment contract."""

from __future__ import annotations

import pytest

from paceline_worker.config import ConfigError
from paceline_worker.reinforcement.config import RlRole, rl_config_from_env
from paceline_worker.rl_settings import (
    Algorithm,
    Dependencies,
    RlSettings,
    RlSettingsError,
    parse_settings,
    settings_from_mapping,
)

LEARNERS = "127.0.0.1:9500,127.0.0.1:9501"


def test_defaults_and_per_algorithm_lag_bound() -> None:
    ppo = settings_from_mapping({})
    assert (ppo.algorithm, ppo.max_policy_lag, ppo.dependencies) == (Algorithm.PPO, 2, Dependencies.RELAXED)
    assert settings_from_mapping({"algorithm": "DQN"}).max_policy_lag == 1000
    assert settings_from_mapping({"algorithm": "DQN", "maxPolicyLag": 5}).max_policy_lag == 5


def test_settings_round_trip_through_json() -> None:
    settings = RlSettings(algorithm=Algorithm.DQN, actors=3, learners=2, dependencies=Dependencies.STRICT)
    assert parse_settings(settings.to_json()) == settings


def test_round_samples_is_one_batch_from_each_of_a_learners_actors() -> None:
    settings = RlSettings(actors=5, learners=2, envs_per_actor=4, exchange_steps=16)
    assert settings.round_samples == 3 * 4 * 16


def test_relaxed_dependencies_are_listed_only_when_relaxed() -> None:
    assert RlSettings(dependencies=Dependencies.STRICT).relaxed_dependencies() == []
    assert "learnersWaitForAveraging" in RlSettings(actors=2, learners=2).relaxed_dependencies()
    bounded = RlSettings(actor_run_ahead=2).relaxed_dependencies()
    assert bounded[0] == "actorWaitsForPolicy (bounded: 2 batches per policy version)"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"algorithm": "A3C"}, "use PPO|DQN"),
        ({"dependencies": "Loose"}, "use Relaxed|Strict"),
        ({"actors": 0}, "actors=0 must be >= 1"),
        ({"maxPolicyLag": -1}, "must be >= 0"),
        ({"envsPerActor": "8"}, "must be an integer"),
        ({"actorCount": 2}, "unknown reinforcement settings"),
        ({"targetReturn": None}, "no stopping rule"),
        ({"actors": 1, "learners": 2}, "every learner needs an actor"),
        ({"env": ""}, "Gymnasium id"),
    ],
)
def test_invalid_settings_say_what_to_fix(data: dict[str, object], message: str) -> None:
    with pytest.raises(RlSettingsError, match=message):
        settings_from_mapping(data)


def test_learner_takes_its_port_from_its_entry_and_actors_map_to_learners_round_robin() -> None:
    base = {"PACELINE_RL": '{"actors": 3, "learners": 2}', "PACELINE_RL_LEARNERS": LEARNERS}
    learner = rl_config_from_env({**base, "PACELINE_ROLE": "learner", "PACELINE_RL_INDEX": "1"})
    assert learner.role is RlRole.LEARNER and learner.learner is not None
    assert learner.learner.port == 9501
    actor = rl_config_from_env({**base, "PACELINE_ROLE": "actor", "PACELINE_RL_INDEX": "2"})
    assert actor.actor is not None and actor.actor.learner == "127.0.0.1:9500"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACELINE_ROLE": "ps"}, "use actor or learner"),
        ({"PACELINE_ROLE": "actor"}, "PACELINE_RL_LEARNERS is required"),
        ({"PACELINE_ROLE": "actor", "PACELINE_RL_LEARNERS": "nohost"}, "not host:port"),
        ({"PACELINE_ROLE": "actor", "PACELINE_RL_LEARNERS": LEARNERS, "PACELINE_RL": "{"}, "not JSON"),
        ({"PACELINE_ROLE": "learner", "PACELINE_RL_LEARNERS": LEARNERS, "PACELINE_RL_INDEX": "2"}, "only 2"),
    ],
)
def test_bad_environment_is_a_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rl_config_from_env(env)
