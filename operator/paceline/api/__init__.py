"""The TrainingJob API as plain data: names, labels, defaults and the spec parsed into typed settings."""

from paceline.api.defaults import DEFAULTS, with_defaults
from paceline.api.names import *  # noqa: F403 - the names are the API's vocabulary
from paceline.api.names import __all__ as _names
from paceline.api.spec import (
    AsyncSettings,
    CheckpointSettings,
    InvalidSpec,
    JobSpec,
    Mode,
    ReinforcementSettings,
    RestartPolicy,
    RunPolicy,
    parse_balancing,
    parse_momentum_tuning,
    parse_reinforcement,
    parse_spec,
    parsed,
)

__all__ = [
    *_names,
    "DEFAULTS",
    "AsyncSettings",
    "CheckpointSettings",
    "InvalidSpec",
    "JobSpec",
    "Mode",
    "ReinforcementSettings",
    "RestartPolicy",
    "RunPolicy",
    "parse_balancing",
    "parse_momentum_tuning",
    "parse_reinforcement",
    "parse_spec",
    "parsed",
    "with_defaults",
]
