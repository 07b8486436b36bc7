"""Reinforcement mode's environment contract: role, index, learner addresses, settings (PACELINE_RL)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..config import ConfigError
from ..rl_settings import RlSettings, RlSettingsError, parse_settings
from ..wire import Env
from .actor import ActorConfig
from .learner import LearnerConfig


class RlRole(Enum):
    ACTOR = "actor"
    LEARNER = "learner"


@dataclass(frozen=True, kw_only=True)
class RlProcessConfig:
    role: RlRole
    actor: ActorConfig | None
    learner: LearnerConfig | None


def parse_learners(raw: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{Env.RL_LEARNERS}={raw!r}: {item!r} is not host:port")
    if not items:
        raise ConfigError(f"{Env.RL_LEARNERS} is required: host:port of every learner, comma-separated")
    return items


def rl_config_from_env(env: Mapping[str, str]) -> RlProcessConfig:
    raw_role = env.get(Env.ROLE, "")
    try:
        role = RlRole(raw_role)
    except ValueError:
        raise ConfigError(f"{Env.ROLE}={raw_role!r}: use actor or learner") from None
    try:
        settings: RlSettings = parse_settings(env.get(Env.RL_SETTINGS) or "{}")
    except RlSettingsError as exc:
        raise ConfigError(f"{Env.RL_SETTINGS}: {exc}") from exc
    learners = parse_learners(env.get(Env.RL_LEARNERS, ""))
    raw_index = env.get(Env.RL_INDEX, "0")
    if not raw_index.isdigit():
        raise ConfigError(f"{Env.RL_INDEX}={raw_index!r} is not an index")
    index = int(raw_index)
    if role is RlRole.ACTOR:
        actor = ActorConfig(settings=settings, index=index, learner=learners[index % len(learners)])
        return RlProcessConfig(role=role, actor=actor, learner=None)
    if index >= len(learners):
        raise ConfigError(f"{Env.RL_INDEX}={index}: only {len(learners)} learners in {Env.RL_LEARNERS}")
    checkpoint = env.get(Env.CHECKPOINT_DIR)
    every = env.get(Env.CHECKPOINT_INTERVAL_STEPS, "50")
    learner = LearnerConfig(
        settings=settings,
        index=index,
        learners=learners,
        bind_address=env.get("PACELINE_BIND_ADDRESS") or env.get(Env.POD_IP) or "127.0.0.1",
        job=env.get(Env.JOB, "local"),
        checkpoint_dir=Path(checkpoint) if checkpoint else None,
        checkpoint_every_rounds=int(every) if every.isdigit() else 50,
    )
    return RlProcessConfig(role=role, actor=None, learner=learner)
