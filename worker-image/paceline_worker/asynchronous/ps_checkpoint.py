"""Parameter-server checkpoints: one file per shard identity in the job's checkpoint directory.

`ps-shard-<i>-of-<n>.npz` holds shard i's (of n) parameters and momentum buffer (float32, in its layout's
order), its model version, the hyperparameters in force and the whole model's parameter names and shapes.
Restoring goes by parameter name, so a shard finds its tensors in whatever files exist, even when the number
of shards (and with it the layout) changed since they were written. Files are written to a temporary name
and renamed.

`restore_shard` is pure; `save_state` / `load_states` are the file I/O (numpy only, no torch, no pickle).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .hyperparameters import Hyperparameters
from .sharding import ParameterSpec, ShardLayout, assign_shards

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
FORMAT_VERSION = 1
FILE_PATTERN = re.compile(r"^ps-shard-(\d+)-of-(\d+)\.npz$")


def shard_file(directory: Path, shard: int, shards: int) -> Path:
    """Where shard `shard` of `shards` keeps its checkpoint. The number of shards is part of the name: after
    a change of it, no shard overwrites a file whose tensors another shard may still have to restore."""
    return directory / f"ps-shard-{shard}-of-{shards}.npz"


@dataclass(frozen=True, kw_only=True)
class ShardState:
    """Everything a shard needs to resume: what `ParameterShard.state()` returns and a file holds."""

    shard: int
    shards: int
    model: tuple[ParameterSpec, ...]  # every parameter of the model, in the model's order
    version: int
    values: FloatArray  # this shard's parameters, in its layout's order
    buffer: FloatArray  # the heavy-ball momentum buffer, same order
    hyperparameters: Hyperparameters
    saved_at: float  # Unix time; the newest file wins for a parameter several files hold

    def layout(self) -> ShardLayout:
        return assign_shards(self.model, self.shards)[self.shard]

    def tensors(self) -> dict[str, tuple[ParameterSpec, FloatArray, FloatArray]]:
        """Parameter name → (spec, values, buffer) of the tensors this state holds."""
        out = {}
        offset = 0
        for spec in self.layout().specs:
            end = offset + spec.numel
            out[spec.name] = (spec, self.values[offset:end], self.buffer[offset:end])
            offset = end
        return out


@dataclass(frozen=True, kw_only=True)
class Restored:
    """A shard's state assembled from checkpoint files."""

    layout: ShardLayout
    model: tuple[ParameterSpec, ...]
    layout_shards: int  # how many shards the layout is one of
    version: int
    values: FloatArray
    buffer: FloatArray
    hyperparameters: Hyperparameters
    sources: tuple[int, ...]  # the shards whose files supplied tensors
    resharded: bool  # the layout differs from the one the files were written with


def restore_shard(states: Sequence[ShardState], *, shard: int, shards: int) -> Restored | str:
    """Shard `shard` of `shards` from saved states, by parameter name; a message when they cannot make it.

    The model's parameter list comes from the newest state. Each tensor comes from the newest state that
    holds it with the right shape. The model version is exact when one file of the same layout supplies
    everything, otherwise the highest version among the files used (versions never go back); the
    hyperparameters are the newest version among them.
    """
    if not states:
        return "no checkpoint"
    newest = max(states, key=lambda s: s.saved_at)
    if not 0 <= shard < shards:
        return f"shard {shard} is not in [0, {shards})"
    layout = assign_shards(newest.model, shards)[shard]
    wanted = {spec.name: spec.shape for spec in layout.specs}
    found: dict[str, tuple[ShardState, FloatArray, FloatArray]] = {}
    for state in sorted(states, key=lambda s: s.saved_at):  # later states overwrite earlier ones
        for name, (spec, values, buffer) in state.tensors().items():
            if wanted.get(name) == spec.shape:
                found[name] = (state, values, buffer)
    missing = [spec.name for spec in layout.specs if spec.name not in found]
    if missing:
        return f"no checkpoint holds {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
    used = {id(found[spec.name][0]): found[spec.name][0] for spec in layout.specs}
    if not used:  # an empty shard: nothing to restore but its place in the sequence
        used = {id(newest): newest}
    same = len(used) == 1 and next(iter(used.values())).layout() == layout
    empty = np.zeros(0, dtype=np.float32)
    value_parts = [found[spec.name][1] for spec in layout.specs]
    buffer_parts = [found[spec.name][2] for spec in layout.specs]
    return Restored(
        layout=layout,
        model=newest.model,
        layout_shards=shards,
        version=max(state.version for state in used.values()),
        values=np.concatenate(value_parts).astype(np.float32) if value_parts else empty,
        buffer=np.concatenate(buffer_parts).astype(np.float32) if buffer_parts else empty,
        hyperparameters=max((s.hyperparameters for s in used.values()), key=lambda h: h.version),
        sources=tuple(sorted({state.shard for state in used.values()})),
        resharded=not same,
    )


def _meta(state: ShardState) -> dict[str, Any]:
    hyper = state.hyperparameters
    return {
        "format": FORMAT_VERSION,
        "shard": state.shard,
        "shards": state.shards,
        "version": state.version,
        "model": [[spec.name, list(spec.shape)] for spec in state.model],
        "hyperparameters": [hyper.version, hyper.learning_rate, hyper.momentum],
        "savedAt": state.saved_at,
    }


def save_state(directory: Path, state: ShardState) -> Path:
    """Write `state` to directory/ps-shard-<i>-of-<n>.npz through a temporary file and an atomic rename."""
    directory.mkdir(parents=True, exist_ok=True)
    target = shard_file(directory, state.shard, state.shards)
    temporary = directory / f".{target.name}.tmp-{os.getpid()}"
    meta = np.frombuffer(json.dumps(_meta(state)).encode(), dtype=np.uint8)
    with open(temporary, "wb") as file:
        np.savez(file, meta=meta, values=state.values, buffer=state.buffer)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    return target


def read_state(path: Path) -> ShardState:
    """One checkpoint file (raises OSError / ValueError / KeyError when it is not one)."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        values = np.array(data["values"], dtype=np.float32)
        buffer = np.array(data["buffer"], dtype=np.float32)
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"unsupported format {meta.get('format')!r}")
    version, learning_rate, momentum = meta["hyperparameters"]
    state = ShardState(
        shard=int(meta["shard"]),
        shards=int(meta["shards"]),
        model=tuple(ParameterSpec(name=str(n), shape=tuple(int(d) for d in s)) for n, s in meta["model"]),
        version=int(meta["version"]),
        values=values,
        buffer=buffer,
        hyperparameters=Hyperparameters(
            version=int(version), learning_rate=float(learning_rate), momentum=float(momentum)
        ),
        saved_at=float(meta["savedAt"]),
    )
    if values.size != state.layout().numel or buffer.size != values.size:
        raise ValueError(f"{values.size} values, the layout holds {state.layout().numel}")
    return state


def load_states(directory: Path) -> list[ShardState]:
    """Every readable shard checkpoint in `directory` (an unreadable one is logged and skipped)."""
    if not directory.is_dir():
        return []
    states = []
    for path in sorted(directory.iterdir()):
        if not FILE_PATTERN.match(path.name):
            continue
        try:
            states.append(read_state(path))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring PS checkpoint %s: %s", path, exc)
    return states
