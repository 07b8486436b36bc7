"""The deterministic toy task shared by the worker harness (in the ranks) and the tests (as the reference)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

FEATURES, CLASSES = 6, 3


def make_dataset(num_samples: int, dtype: torch.dtype) -> TensorDataset:
    generator = torch.Generator().manual_seed(1234)
    inputs = torch.randn(num_samples, FEATURES, generator=generator, dtype=torch.float64)
    rule = torch.randn(FEATURES, CLASSES, generator=generator, dtype=torch.float64)
    return TensorDataset(inputs.to(dtype), (inputs @ rule).argmax(dim=1))


def make_model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(99)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, CLASSES)).to(dtype)
