"""Turning a rank's sample indices into a batch on its device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset, default_collate


@dataclass(frozen=True, kw_only=True)
class Batch:
    """One rank's share of one global step. `data` is the collated dataset items, already on the device."""

    step: int
    epoch: int
    indices: list[int]
    global_batch_size: int
    data: Any

    @property
    def size(self) -> int:
        return len(self.indices)

    @property
    def inputs(self) -> Any:
        return split_pair(self.data)[0]

    @property
    def targets(self) -> Any:
        return split_pair(self.data)[1]


def split_pair(data: Any) -> tuple[Any, Any]:
    """(inputs, targets) of a collated batch of pairs."""
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(
        "the dataset must yield (inputs, targets) pairs; otherwise pass compute_loss= to the Worker"
    )


def _map_tensors(data: Any, fn: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, tuple | list):
        return type(data)(_map_tensors(item, fn) for item in data)
    if isinstance(data, dict):
        return {key: _map_tensors(value, fn) for key, value in data.items()}
    return data


def collate_indices(dataset: Dataset[Any], indices: Sequence[int]) -> Any:
    """Collate dataset[i] for i in indices; no indices give zero-length tensors of the right shape."""
    if isinstance(dataset, TensorDataset):
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return tuple(tensor[index] for tensor in dataset.tensors)
    if not indices:
        return _map_tensors(default_collate([dataset[0]]), lambda t: t[:0])
    return default_collate([dataset[i] for i in indices])


def to_device(data: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return data
    return _map_tensors(data, lambda t: t.to(device, non_blocking=True))
