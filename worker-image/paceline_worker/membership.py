"""A rank under Paceline's launcher: the generation it belongs to, where newer ones come from, and how to
tell a lost peer from its own failure."""

from __future__ import annotations

from collections.abc import MutableMapping

import torch.distributed as dist

from .config import WorkerConfig
from .generation_file import GenerationFile, data_parallel_only, follower_marker, rank_env
from .rendezvous import Rendezvous, RendezvousError
from .wire import Env, Generation

PEER_LOST_MARKERS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_lost(exc: BaseException) -> bool:
    """Whether `exc` says another rank went away (a collective's or the rendezvous' connection broke) rather
    than this rank failing on its own. gloo reports a lost peer as a RuntimeError naming the broken pair."""
    if isinstance(exc, RendezvousError | dist.DistNetworkError):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in PEER_LOST_MARKERS)


class Membership:
    """A rank under Paceline's launcher: its generation (pods, this pod's place, rendezvous) and the file
    through which the launcher hands over newer ones."""

    def __init__(
        self,
        generations: GenerationFile,
        generation: Generation,
        environ: MutableMapping[str, str],
        default_batch_size: int | None,
    ) -> None:
        self.generations = generations
        self.generation = generation
        self.environ = environ
        self.default_batch_size = default_batch_size
        self.grace_s = float(environ.get(Env.RESIZE_GRACE_S) or 0)
        self.local_rank = int(environ.get(Env.LOCAL_RANK) or 0)
        self.local_world_size = int(environ.get(Env.LOCAL_WORLD_SIZE) or 1)

    def newest(self) -> Generation:
        return self.generations.newest()

    def rank_env(self, generation: Generation) -> dict[str, str]:
        return rank_env(generation, local_rank=self.local_rank, local_world_size=self.local_world_size)

    def in_place(self, config: WorkerConfig) -> bool:
        """Whether this rank follows new generations without a restart (elastic, data parallel only)."""
        return self.grace_s > 0 and data_parallel_only(self.generation.plan) and not config.plan.hybrid

    def announce(self) -> None:
        """Tell the launcher this rank follows new generations in place (it need not restart it)."""
        marker = follower_marker(self.generations.path, self.local_rank)
        marker.parent.mkdir(exist_ok=True)
        marker.touch()

    def rendezvous(self, generation: Generation, config: WorkerConfig) -> Rendezvous:
        return Rendezvous(
            generation,
            local_rank=self.local_rank,
            local_world_size=self.local_world_size,
            timeout_s=config.process_group_timeout_s,
        )
