"""Global sampler: every sample exactly once per epoch, whatever the shares and however often they change.

All ranks hold an identical copy (same seed, same assignment sequence), so nothing is communicated.
Per epoch the samples are permuted with a seeded generator; a global cursor advances by the global batch
size B = sum(b_m) each step and rank m reads its slice at offset sum_{k<m} b_k.
The last batch of an epoch, with R < B samples left, is split in proportion to the shares
(largest remainder, ties to the lower rank), so it may give some ranks an empty slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class Slice:
    start: int
    count: int


def proportional_split(total: int, shares: Sequence[int]) -> list[int]:
    """Split `total` items in proportion to `shares` (largest remainder; ties to the lower index)."""
    share_sum = sum(shares)
    if share_sum <= 0:
        raise ValueError("shares must sum to a positive number")
    if total < 0:
        raise ValueError("total must be >= 0")
    floors = [total * s // share_sum for s in shares]
    remainders = [total * s - f * share_sum for s, f in zip(shares, floors, strict=True)]
    missing = total - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (-remainders[i], i))
    for i in order[:missing]:
        floors[i] += 1
    return floors


def plan_step(*, num_samples: int, cursor: int, batch_sizes: Sequence[int]) -> list[Slice]:
    """Slices (relative to the epoch's permutation) that each rank takes for the step starting at `cursor`."""
    if not 0 <= cursor < num_samples:
        raise ValueError(f"cursor {cursor} outside [0, {num_samples})")
    remaining = num_samples - cursor
    counts = list(batch_sizes)
    if sum(counts) > remaining:
        counts = proportional_split(remaining, counts)
    slices, start = [], cursor
    for count in counts:
        slices.append(Slice(start=start, count=count))
        start += count
    return slices


@dataclass(frozen=True, kw_only=True)
class SamplerState:
    epoch: int = 0
    cursor: int = 0


@dataclass(frozen=True, kw_only=True)
class StepSamples:
    """What one rank trains on in one step."""

    epoch: int
    indices: list[int]
    global_batch_size: int  # samples in this step summed over all ranks (< B only for an epoch's last batch)
    counts: tuple[int, ...] = ()  # samples of every rank in this step


class GlobalSampler:
    """Deterministic per-epoch permutation consumed by a global cursor."""

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True) -> None:
        if num_samples <= 0:
            raise ValueError("the dataset is empty")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.state = SamplerState()
        self._permutation_epoch = -1
        self._permutation: list[int] = []

    def permutation(self, epoch: int) -> list[int]:
        if epoch != self._permutation_epoch:
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed + epoch)
                self._permutation = torch.randperm(self.num_samples, generator=generator).tolist()
            else:
                self._permutation = list(range(self.num_samples))
            self._permutation_epoch = epoch
        return self._permutation

    def next_step(self, batch_sizes: Sequence[int], rank: int) -> StepSamples:
        """Indices for `rank` in the next step; advances the shared cursor (once per step on every rank)."""
        epoch, cursor = self.state.epoch, self.state.cursor
        slices = plan_step(num_samples=self.num_samples, cursor=cursor, batch_sizes=batch_sizes)
        mine = slices[rank]
        indices = self.permutation(epoch)[mine.start : mine.start + mine.count]
        taken = sum(s.count for s in slices)
        new_cursor = cursor + taken
        if new_cursor >= self.num_samples:
            self.state = SamplerState(epoch=epoch + 1, cursor=0)
        else:
            self.state = SamplerState(epoch=epoch, cursor=new_cursor)
        return StepSamples(
            epoch=epoch, indices=indices, global_batch_size=taken, counts=tuple(s.count for s in slices)
        )

    def state_dict(self) -> dict[str, int | bool]:
        return {
            "epoch": self.state.epoch,
            "cursor": self.state.cursor,
            "seed": self.seed,
            "numSamples": self.num_samples,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, int | bool]) -> None:
        if int(state["numSamples"]) != self.num_samples:
            raise ValueError(
                f"checkpoint was taken on {state['numSamples']} samples, the dataset has {self.num_samples}"
            )
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
        self._permutation_epoch = -1
        self.state = SamplerState(epoch=int(state["epoch"]), cursor=int(state["cursor"]))
