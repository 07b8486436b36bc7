"""The pod's membership file: how the launcher hands a new generation to ranks that keep running.

The launcher writes the newest generation it accepted to `PACELINE_GENERATION_FILE` (atomically); every rank
checks the file at each step boundary (one `stat`) and, on a newer generation, regroups in place: same
process, new rank, world and rendezvous (see `paceline_worker.rendezvous`). Pure functions plus small file
I/O; no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .wire import Env, Generation, GenerationError, generation_from_mapping

POLL_S = 0.05


def write_generation(path: Path, generation: Generation) -> None:
    """Replace the file's content at once: a reader sees the old or the new generation, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        json.dump(generation.to_json_dict(), out)
    os.replace(tmp, path)


def rank_env(generation: Generation, *, local_rank: int, local_world_size: int) -> dict[str, str]:
    """The variables of one rank in `generation`, as torchrun would set them for a multi-node job: its
    global rank, the world, the rendezvous host — where rank 0 itself hosts the store (`env://`)."""
    rank, world = generation.node_rank * local_world_size + local_rank, generation.nnodes * local_world_size
    return {
        **generation.env(),
        Env.RANK: str(rank),
        Env.WORLD_SIZE: str(world),
        Env.GROUP_RANK: str(generation.node_rank),
        "GROUP_WORLD_SIZE": str(generation.nnodes),
        "ROLE_RANK": str(rank),
        "ROLE_WORLD_SIZE": str(world),
        Env.MASTER_ADDR: generation.master_addr,
        Env.MASTER_PORT: str(generation.master_port),
        "TORCHELASTIC_USE_AGENT_STORE": "False",  # torchrun's own store is the pod's, not the job's
    }


def follower_marker(generation_file: Path, local_rank: int) -> Path:
    """Where a rank says it follows new generations in place (a Paceline `Worker` on a data-parallel plan);
    the launcher hands a generation to running ranks only when every local rank said so."""
    return generation_file.parent / "followers" / str(local_rank)


def followers(generation_file: Path) -> int:
    folder = generation_file.parent / "followers"
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def data_parallel_only(plan: Mapping[str, object]) -> bool:
    """True when the plan splits no module (its ranks can change group without re-splitting weights)."""
    tensor_parallel = plan.get("tensorParallel", 1)
    return not plan.get("modules") and (not isinstance(tensor_parallel, int) or tensor_parallel <= 1)


def regroups_in_place(current: Generation, new: Generation) -> bool:
    """Whether running ranks can move from `current` to `new` without a restart.

    Data-parallel ranks keep their replica of the model and only change process group; split modules
    (tensor parallel) would need re-sharding, so those ranks restart instead.
    """
    return data_parallel_only(current.plan) and data_parallel_only(new.plan)


class GenerationFile:
    """A rank's view of the membership file; re-reads it only when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._newest: Generation | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GenerationFile | None:
        path = env.get(Env.GENERATION_FILE)
        return cls(Path(path)) if path else None

    def newest(self) -> Generation:
        """The newest generation the launcher handed over."""
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self._stamp or self._newest is None:
            try:
                self._newest = generation_from_mapping(json.loads(self.path.read_text()))
            except (ValueError, GenerationError) as exc:
                raise GenerationError(f"{self.path}: {exc}") from exc
            self._stamp = stamp
        return self._newest

    def newer_than(self, generation: int) -> Generation | None:
        newest = self.newest()
        return newest if newest.generation > generation else None

    def wait_newer(
        self, generation: int, *, timeout_s: float, abort: Callable[[], bool]
    ) -> Generation | None:
        """Block until a generation newer than `generation` arrives; None on timeout or when `abort()`."""
        deadline = time.monotonic() + timeout_s
        while not abort():
            newer = self.newer_than(generation)
            if newer is not None:
                return newer
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)
        return None
