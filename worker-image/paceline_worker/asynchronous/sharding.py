"""Which parameter tensor lives on which parameter-server shard (pure; identical on every worker)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ParameterSpec:
    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True, kw_only=True)
class ShardLayout:
    """Parameters (by position in the model's parameter list) held by one shard, in a fixed order."""

    shard: int
    indices: tuple[int, ...]
    specs: tuple[ParameterSpec, ...]

    @property
    def numel(self) -> int:
        return sum(spec.numel for spec in self.specs)

    def fingerprint(self) -> str:
        """Short hash of names and shapes: a worker built from another model is refused by the shard."""
        text = ";".join(f"{s.name}:{'x'.join(map(str, s.shape))}" for s in self.specs)
        return hashlib.sha256(f"{self.shard}|{text}".encode()).hexdigest()[:16]


def assign_shards(specs: Sequence[ParameterSpec], shards: int) -> list[ShardLayout]:
    """Greedy balance by element count: largest tensor first onto the least loaded shard (ties: lower index).

    Deterministic, so every worker computes the same layout without talking to anyone. A shard may end up
    empty when there are more shards than tensors.
    """
    if shards < 1:
        raise ValueError(f"need at least one shard, got {shards}")
    loads = [0] * shards
    members: list[list[int]] = [[] for _ in range(shards)]
    order = sorted(range(len(specs)), key=lambda i: (-specs[i].numel, i))
    for index in order:
        target = min(range(shards), key=lambda s: (loads[s], s))
        members[target].append(index)
        loads[target] += specs[index].numel
    layouts = []
    for shard, indices in enumerate(members):
        ordered = tuple(sorted(indices))
        layouts.append(ShardLayout(shard=shard, indices=ordered, specs=tuple(specs[i] for i in ordered)))
    return layouts
