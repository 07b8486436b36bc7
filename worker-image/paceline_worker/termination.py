"""The container's termination message: why a worker stopped, shown in pod status and operator events."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DEFAULT_PATH = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
LIMIT_BYTES = 4096


def write_termination_message(text: str) -> None:
    """Best effort: a read-only or missing termination log never hides the original error."""
    path = Path(os.environ.get("PACELINE_TERMINATION_LOG") or DEFAULT_PATH)
    with contextlib.suppress(OSError):
        path.write_text(text[:LIMIT_BYTES])
