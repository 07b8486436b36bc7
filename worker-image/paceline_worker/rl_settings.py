"""Reinforcement mode's settings: the JSON in PACELINE_RL that the operator writes, actors and learners read.

Standard library only (the operator imports it): keys are the CRD's `reinforcement` block, flattened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)


class RlSettingsError(ValueError):
    """PACELINE_RL is missing a field, has an unknown one, or a value out of range; the message says which."""


class Algorithm(StrEnum):
    PPO = "PPO"  # on-policy: needs a small maxPolicyLag
    DQN = "DQN"  # off-policy: tolerates a large maxPolicyLag


class Dependencies(StrEnum):
    RELAXED = "Relaxed"  # actors never wait for a policy, learners never wait for fresh data
    STRICT = "Strict"  # lock-step baseline: actors wait for each new policy, learners for a fresh batch


DEFAULT_MAX_POLICY_LAG = {Algorithm.PPO: 2, Algorithm.DQN: 1000}


@dataclass(frozen=True, kw_only=True)
class RlSettings:
    env: str = "CartPole-v1"  # a Gymnasium id
    algorithm: Algorithm = Algorithm.PPO
    actors: int = 2
    envs_per_actor: int = 8
    learners: int = 1
    max_policy_lag: int = (
        2  # versions a sample's policy may be behind the learner's; older samples are dropped
    )
    exchange_steps: int = 64  # steps per environment in one shipped trajectory batch
    average_every: int = 10  # learner rounds between model averages (several learners)
    actor_run_ahead: int = 0  # relaxed: batches an actor ships per policy version before it waits (0: never)
    dependencies: Dependencies = Dependencies.RELAXED
    target_return: int | None = 475  # stop when the mean return over the last `return_episodes` reaches it
    return_episodes: int = 20
    max_env_steps: int = 0  # stop after this many environment steps (0: no budget)
    seed: int = 0

    @property
    def relaxed(self) -> bool:
        return self.dependencies is Dependencies.RELAXED

    @property
    def round_samples(self) -> int:
        """Transitions one learner trains on per round: a batch from each of its actors."""
        actors_per_learner = -(-self.actors // self.learners)
        return actors_per_learner * self.envs_per_actor * self.exchange_steps

    def relaxed_dependencies(self) -> list[str]:
        """Which waits are removed (status.reinforcement.relaxedDependencies)."""
        if not self.relaxed:
            return []
        actor = "actorWaitsForPolicy"
        if self.actor_run_ahead:
            actor += f" (bounded: {self.actor_run_ahead} batches per policy version)"
        waits = [actor, "learnerWaitsForFreshBatch"]
        return [*waits, "learnersWaitForAveraging"] if self.learners > 1 else waits

    def to_json_dict(self) -> dict[str, Any]:
        return {_CAMEL[k]: (v.value if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), separators=(",", ":"), sort_keys=True)


_CAMEL = {
    "env": "env",
    "algorithm": "algorithm",
    "actors": "actors",
    "envs_per_actor": "envsPerActor",
    "learners": "learners",
    "max_policy_lag": "maxPolicyLag",
    "exchange_steps": "exchangeSteps",
    "average_every": "averageEvery",
    "actor_run_ahead": "actorRunAhead",
    "dependencies": "dependencies",
    "target_return": "targetReturn",
    "return_episodes": "returnEpisodes",
    "max_env_steps": "maxEnvSteps",
    "seed": "seed",
}
_SNAKE = {camel: snake for snake, camel in _CAMEL.items()}
_MINIMUM = {
    "actors": 1,
    "envs_per_actor": 1,
    "learners": 1,
    "max_policy_lag": 0,
    "exchange_steps": 1,
    "average_every": 1,
    "actor_run_ahead": 0,
    "return_episodes": 1,
    "max_env_steps": 0,
    "seed": 0,
}


def _enum(kind: type[_E], raw: object, key: str) -> _E:
    try:
        return kind(str(raw))
    except ValueError:
        allowed = "|".join(e.value for e in kind)
        raise RlSettingsError(f"{key}={raw!r}: use {allowed}") from None


def settings_from_mapping(data: Mapping[str, Any]) -> RlSettings:
    """Camel-case keys as in the CRD; absent keys take the defaults (maxPolicyLag: per algorithm)."""
    unknown = sorted(set(data) - set(_SNAKE))
    if unknown:
        raise RlSettingsError(f"unknown reinforcement settings {unknown}; known: {sorted(_SNAKE)}")
    values: dict[str, Any] = {}
    for camel, raw in data.items():
        key = _SNAKE[camel]
        if key == "algorithm":
            values[key] = _enum(Algorithm, raw, camel)
        elif key == "dependencies":
            values[key] = _enum(Dependencies, raw, camel)
        elif key == "env":
            if not isinstance(raw, str) or not raw:
                raise RlSettingsError(f"env={raw!r}: give a Gymnasium id such as CartPole-v1")
            values[key] = raw
        elif key == "target_return" and raw is None:
            values[key] = None
        else:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise RlSettingsError(f"{camel}={raw!r} must be an integer")
            if raw < _MINIMUM.get(key, raw):
                raise RlSettingsError(f"{camel}={raw} must be >= {_MINIMUM[key]}")
            values[key] = raw
    if "max_policy_lag" not in values:
        values["max_policy_lag"] = DEFAULT_MAX_POLICY_LAG[values.get("algorithm", Algorithm.PPO)]
    settings = RlSettings(**values)
    if settings.target_return is None and settings.max_env_steps == 0:
        raise RlSettingsError("no stopping rule: set targetReturn, maxEnvSteps, or both")
    if settings.learners > settings.actors:
        raise RlSettingsError(
            f"learners={settings.learners} > actors={settings.actors}: every learner needs an actor"
        )
    return settings


def parse_settings(text: str | bytes) -> RlSettings:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RlSettingsError(f"PACELINE_RL is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RlSettingsError("PACELINE_RL must be a JSON object")
    return settings_from_mapping(data)
