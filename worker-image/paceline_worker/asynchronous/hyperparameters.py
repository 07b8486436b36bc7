"""Versioned learning rate and explicit momentum of a parameter-server shard (pure, thread-safe store).

The update a shard accepts (`HyperparameterUpdate`) is part of the wire contract, `paceline_worker.wire`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..wire import HyperparameterError, HyperparameterUpdate

HISTORY_LIMIT = 100


@dataclass(frozen=True, kw_only=True)
class Hyperparameters(HyperparameterUpdate):
    """The settings in force: an update with every value present."""

    learning_rate: float
    momentum: float

    def updated(self, update: HyperparameterUpdate) -> Hyperparameters:
        """These settings with an update applied (its None values keep the current ones)."""
        return Hyperparameters(
            version=update.version,
            learning_rate=self.learning_rate if update.learning_rate is None else update.learning_rate,
            momentum=self.momentum if update.momentum is None else update.momentum,
        )


class StaleVersionError(HyperparameterError):
    """The offered version is not newer than the one in force."""


class HyperparameterStore:
    """The hyperparameters in force; a change takes effect for the very next update (no pending state)."""

    def __init__(self, initial: Hyperparameters, *, model_version: int = 0) -> None:
        self._lock = threading.Lock()
        self._current = initial
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_LIMIT)
        self._record(initial, model_version=model_version)

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
            self._current = self._current.updated(update)
            self._record(self._current, model_version=model_version)
            return self._current

    def _record(self, applied: Hyperparameters, *, model_version: int) -> None:
        """When a version took effect: the model version of the first update that used it, and Unix time."""
        self._history.append(
            {**applied.to_json_dict(), "appliedAtModelVersion": model_version, "appliedAt": time.time()}
        )

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history)
