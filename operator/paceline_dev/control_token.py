"""The control token of worker processes started outside a cluster (integration tests, benchmarks): as a
file, the way the job's Secret volume holds it in a pod."""

from __future__ import annotations

from pathlib import Path

CONTROL_TOKEN = "local-control-token"  # what the operator would keep in the job's Secret


def control_token_file(directory: Path, token: str = CONTROL_TOKEN) -> Path:
    """Write the token to `directory`/control-token (created if missing); the file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "control-token"
    path.write_text(token)
    return path
