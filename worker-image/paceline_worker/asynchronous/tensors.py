"""Model parameters ⇄ flat float32 shard vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .sharding import ParameterSpec, ShardLayout

FloatArray = npt.NDArray[np.float32]


def parameter_specs(model: nn.Module) -> list[ParameterSpec]:
    return [ParameterSpec(name=name, shape=tuple(p.shape)) for name, p in model.named_parameters()]


def flatten(tensors: Sequence[torch.Tensor | None], layout: ShardLayout) -> FloatArray:
    """The layout's tensors concatenated (None, e.g. an unused parameter's gradient, counts as zeros)."""
    parts: list[FloatArray] = []
    for index, spec in zip(layout.indices, layout.specs, strict=True):
        tensor = tensors[index]
        if tensor is None:
            parts.append(np.zeros(spec.numel, dtype=np.float32))
        else:
            parts.append(tensor.detach().to("cpu", torch.float32).reshape(-1).numpy())
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def load(params: Sequence[torch.Tensor], layout: ShardLayout, values: FloatArray) -> None:
    """Copy a shard vector into the model's parameters (in place, no autograd)."""
    source = torch.from_numpy(np.ascontiguousarray(values))
    offset = 0
    with torch.no_grad():
        for index, spec in zip(layout.indices, layout.specs, strict=True):
            chunk = source[offset : offset + spec.numel].view(spec.shape)
            params[index].copy_(chunk)
            offset += spec.numel
