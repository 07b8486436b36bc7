"""Versioned learning rate and explicit momentum of a parameter-server shard (pure, thread-safe store)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HISTORY_LIMIT = 100


class HyperparameterError(ValueError):
    """A malformed hyperparameter update; the message says what to fix."""


@dataclass(frozen=True, kw_only=True)
class Hyperparameters:
    version: int
    learning_rate: float
    momentum: float

    def to_json_dict(self) -> dict[str, Any]:
        return {"version": self.version, "learningRate": self.learning_rate, "momentum": self.momentum}


@dataclass(frozen=True, kw_only=True)
class HyperparameterUpdate:
    """A requested change; None leaves that value as it is."""

    version: int
    learning_rate: float | None
    momentum: float | None

    def applied_to(self, current: Hyperparameters) -> Hyperparameters:
        return Hyperparameters(
            version=self.version,
            learning_rate=current.learning_rate if self.learning_rate is None else self.learning_rate,
            momentum=current.momentum if self.momentum is None else self.momentum,
        )


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HyperparameterError(f"{key} must be a finite number or null, got {value!r}")
    return float(value)


def update_from_mapping(data: Mapping[str, Any]) -> HyperparameterUpdate:
    """Validate {"version": int >= 0, "learningRate": > 0 | null, "momentum": in (-1, 1) | null}."""
    unknown = set(data) - {"version", "learningRate", "momentum"}
    if unknown:
        raise HyperparameterError(f"unknown fields {sorted(unknown)}; use version, learningRate, momentum")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise HyperparameterError(f"version must be an integer >= 0, got {version!r}")
    learning_rate = _number(data, "learningRate")
    momentum = _number(data, "momentum")
    if learning_rate is not None and learning_rate <= 0:
        raise HyperparameterError(f"learningRate must be > 0, got {learning_rate}")
    if momentum is not None and not -1.0 < momentum < 1.0:
        raise HyperparameterError(f"momentum must lie in (-1, 1), got {momentum}")
    return HyperparameterUpdate(version=version, learning_rate=learning_rate, momentum=momentum)


def parse_update(raw: bytes | str) -> HyperparameterUpdate:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HyperparameterError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HyperparameterError("the body must be a JSON object")
    return update_from_mapping(data)


@dataclass(frozen=True, kw_only=True)
class AppliedHyperparameters:
    """When a version took effect: the model version of the first update that used it, and Unix time."""

    hyperparameters: Hyperparameters
    model_version: int
    applied_at: float

    def to_json_dict(self) -> dict[str, Any]:
        return {
            **self.hyperparameters.to_json_dict(),
            "appliedAtModelVersion": self.model_version,
            "appliedAt": self.applied_at,
        }


class StaleVersionError(HyperparameterError):
    """The offered version is not newer than the one in force."""


class HyperparameterStore:
    """The hyperparameters in force; a change takes effect for the very next update (no pending state)."""

    def __init__(self, initial: Hyperparameters) -> None:
        self._lock = threading.Lock()
        self._current = initial
        self._history: deque[AppliedHyperparameters] = deque(maxlen=HISTORY_LIMIT)
        self._history.append(
            AppliedHyperparameters(hyperparameters=initial, model_version=0, applied_at=time.time())
        )

    @property
    def current(self) -> Hyperparameters:
        with self._lock:
            return self._current

    def offer(self, update: HyperparameterUpdate, *, model_version: int) -> Hyperparameters:
        """Apply `update` if its version is newer; raises StaleVersionError otherwise."""
        with self._lock:
            if update.version <= self._current.version:
                raise StaleVersionError(
                    f"version {update.version} is not newer than version {self._current.version}"
                )
            self._current = update.applied_to(self._current)
            self._history.append(
                AppliedHyperparameters(
                    hyperparameters=self._current, model_version=model_version, applied_at=time.time()
                )
            )
            return self._current

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return [entry.to_json_dict() for entry in self._history]
