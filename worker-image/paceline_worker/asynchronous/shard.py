"""One parameter-server shard: parameters, momentum buffer, model version and exact staleness (no I/O)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..wire import HyperparameterUpdate
from .hyperparameters import Hyperparameters, HyperparameterStore
from .ps_checkpoint import Restored, ShardState
from .sharding import ParameterSpec, assign_shards

FloatArray = npt.NDArray[np.float32]
STALENESS_LOG_LIMIT = 65536


class ShardError(ValueError):
    """A request the shard refuses (not initialised, wrong layout, wrong size, version from the future)."""


@dataclass(frozen=True, kw_only=True)
class AppliedUpdate:
    """One applied update: who wrote it, the version it read, the version it created, τ and μ/lr used."""

    index: int  # 0-based position in the shard's update sequence (== version - 1)
    worker: str
    read_version: int
    version: int  # model version after this update
    staleness: int  # τ = version before this update − read_version
    learning_rate: float
    momentum: float
    dropped: bool = False  # τ above maxStaleness: not applied (version unchanged, not in the log)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    version: int
    values: FloatArray


class ParameterShard:
    """Heavy-ball SGD applied update by update: buf ← μ·buf + g;  w ← w − lr·buf;  version += 1.

    With `max_staleness` > 0, a gradient read more than that many versions ago is dropped: not applied,
    counted, and the worker gets the current parameters back to compute its next gradient on.

    τ of an update is exact: every update gets the next version under one lock, so τ is the number of
    updates (from any worker) applied between the worker's read (version v) and its write.
    """

    def __init__(
        self, *, shard: int, initial: HyperparameterUpdate | None = None, max_staleness: int = 0
    ) -> None:
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.shard = shard
        self.max_staleness = max_staleness  # 0: no bound
        self.dropped = 0  # updates refused for staleness
        self._lock = threading.Lock()
        self._values: FloatArray | None = None
        self._buffer: FloatArray | None = None
        self._fingerprint = ""
        # the whole model (from the first worker): what a checkpoint needs to be restored by name
        self._model: tuple[ParameterSpec, ...] = ()
        self.restored = False  # the state came from a checkpoint
        self._shards = 1
        self._version = 0
        self._store: HyperparameterStore | None = None
        self._override = initial  # hyperparameters from the PS environment, if any
        self._log: deque[AppliedUpdate] = deque(maxlen=STALENESS_LOG_LIMIT)
        self.on_update: Callable[[AppliedUpdate], None] | None = None

    @property
    def initialised(self) -> bool:
        return self._values is not None

    @property
    def version(self) -> int:
        return self._version

    @property
    def hyperparameters(self) -> Hyperparameters | None:
        return None if self._store is None else self._store.current

    @property
    def store(self) -> HyperparameterStore | None:
        return self._store

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def numel(self) -> int:
        return 0 if self._values is None else int(self._values.size)

    def initialise(
        self,
        *,
        fingerprint: str,
        values: FloatArray,
        learning_rate: float,
        momentum: float,
        model: Sequence[ParameterSpec] = (),
        shards: int = 1,
    ) -> Snapshot:
        """The first worker's parameters become the model; later calls just check the layout and read.

        `model` (every parameter's name and shape, in model order) and `shards` let the shard checkpoint
        itself; they must give the layout `fingerprint` names."""
        with self._lock:
            if self._values is None:
                if model:
                    layout = assign_shards(model, shards)[self.shard]
                    if layout.fingerprint() != fingerprint or layout.numel != values.size:
                        raise ShardError(
                            f"shard {self.shard}: the model the worker described does not give layout "
                            f"{fingerprint} with {values.size} values"
                        )
                self._values = np.array(values, dtype=np.float32, copy=True)
                self._buffer = np.zeros_like(self._values)
                self._fingerprint = fingerprint
                self._model, self._shards = tuple(model), shards
                from_worker = Hyperparameters(version=0, learning_rate=learning_rate, momentum=momentum)
                initial = from_worker
                if self._override is not None:
                    initial = from_worker.updated(self._override)
                self._store = HyperparameterStore(initial)
            elif fingerprint != self._fingerprint or values.size != self._values.size:
                hint = (
                    "restored from a checkpoint of another model? (remove the job's ps-shard-*.npz)"
                    if self.restored
                    else "same model and PACELINE_PS_ADDRS on every worker?"
                )
                raise ShardError(
                    f"shard {self.shard} holds layout {self._fingerprint} ({self._values.size} values), "
                    f"the worker sent {fingerprint} ({values.size}): {hint}"
                )
            return Snapshot(version=self._version, values=self._values.copy())

    def restore(self, restored: Restored) -> None:
        """Resume from a checkpoint (before any worker initialised the shard): parameters, momentum
        buffer, model version and hyperparameters (the environment's override only when newer)."""
        with self._lock:
            if self._values is not None:
                raise ShardError(f"shard {self.shard} is initialised already")
            self._values = restored.values.copy()
            self._buffer = restored.buffer.copy()
            self._fingerprint = restored.layout.fingerprint()
            self._version = restored.version
            self._model, self._shards = restored.model, restored.layout_shards
            self.restored = True
            hyper = restored.hyperparameters
            if self._override is not None and self._override.version > hyper.version:
                hyper = hyper.updated(self._override)
            self._store = HyperparameterStore(hyper, model_version=restored.version)

    def state(self) -> ShardState | None:
        """A copy of everything a checkpoint holds; None before the shard knows its model's layout."""
        with self._lock:
            if self._values is None or self._buffer is None or self._store is None or not self._model:
                return None
            return ShardState(
                shard=self.shard,
                shards=self._shards,
                model=self._model,
                version=self._version,
                values=self._values.copy(),
                buffer=self._buffer.copy(),
                hyperparameters=self._store.current,
                saved_at=time.time(),
            )

    def read(self) -> Snapshot:
        with self._lock:
            if self._values is None:
                raise ShardError(f"shard {self.shard} is not initialised yet")
            return Snapshot(version=self._version, values=self._values.copy())

    def apply(
        self, *, worker: str, read_version: int, gradient: FloatArray
    ) -> tuple[AppliedUpdate, Snapshot]:
        """Apply one gradient computed at `read_version`; returns the record and the parameters after it."""
        with self._lock:
            if self._values is None or self._buffer is None or self._store is None:
                raise ShardError(f"shard {self.shard} is not initialised yet")
            if gradient.size != self._values.size:
                raise ShardError(
                    f"gradient has {gradient.size} values, shard {self.shard} holds {self._values.size}"
                )
            if not 0 <= read_version <= self._version:
                raise ShardError(f"read version {read_version} is not in [0, {self._version}]")
            hyper = self._store.current
            staleness = self._version - read_version
            if self.max_staleness and staleness > self.max_staleness:
                self.dropped += 1
                record = AppliedUpdate(
                    index=self._version,
                    worker=worker,
                    read_version=read_version,
                    version=self._version,
                    staleness=staleness,
                    learning_rate=hyper.learning_rate,
                    momentum=hyper.momentum,
                    dropped=True,
                )
                if self.on_update is not None:
                    self.on_update(record)
                return record, Snapshot(version=self._version, values=self._values.copy())
            self._buffer *= np.float32(hyper.momentum)
            self._buffer += gradient
            self._values -= np.float32(hyper.learning_rate) * self._buffer
            record = AppliedUpdate(
                index=self._version,
                worker=worker,
                read_version=read_version,
                version=self._version + 1,
                staleness=self._version - read_version,
                learning_rate=hyper.learning_rate,
                momentum=hyper.momentum,
            )
            self._version += 1
            self._log.append(record)
            if self.on_update is not None:
                self.on_update(record)
            return record, Snapshot(version=self._version, values=self._values.copy())

    def set_hyperparameters(self, update: HyperparameterUpdate) -> tuple[Hyperparameters, int]:
        """Versioned change, in force from the next update: (the values now in force, the index of the first
        update that uses them, read under the same lock). Raises StaleVersionError / ShardError."""
        with self._lock:
            if self._store is None:
                raise ShardError(f"shard {self.shard} is not initialised yet: no worker has connected")
            return self._store.offer(update, model_version=self._version), self._version

    def updates_after(self, index: int, limit: int = 10000) -> list[AppliedUpdate]:
        """Applied updates with index >= `index` still in the log (the last 65536), oldest first."""
        with self._lock:
            return [u for u in self._log if u.index >= index][:limit]
