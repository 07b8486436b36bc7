"""Checkpoint files: written atomically by rank 0, read by rank 0 and shared with the other ranks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "paceline-checkpoint.pt"
FORMAT_VERSION = 1


def checkpoint_path(directory: Path) -> Path:
    return directory / CHECKPOINT_FILE


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    """Write `state` to directory/paceline-checkpoint.pt via a temporary file and an atomic rename."""
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory)
    temporary = target.with_suffix(f".tmp-{os.getpid()}")
    torch.save({"format": FORMAT_VERSION, **state}, temporary)
    os.replace(temporary, target)
    return target


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The saved state, or None when the directory holds no checkpoint."""
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {state.get('format')!r}")
    log.info("found checkpoint %s at step %s", path, state.get("step"))
    return state
