"""Where a rank sits: its pod (worker), its data-parallel group and its place in the tensor-parallel group.

torchrun numbers ranks pod by pod (RANK = pod * LOCAL_WORLD_SIZE + LOCAL_RANK), so tensor-parallel groups of
`t` consecutive ranks never leave a pod. The operator assigns batch shares per pod; a pod's share is split
as evenly as possible across the data-parallel groups inside it (the first groups take the remainder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Topology:
    rank: int
    world_size: int
    local_world_size: int = 1
    tensor_parallel: int = 1

    def __post_init__(self) -> None:
        if self.world_size % self.local_world_size:
            raise ValueError(f"WORLD_SIZE={self.world_size} is not a multiple of LOCAL_WORLD_SIZE")
        if self.local_world_size % self.tensor_parallel:
            raise ValueError(f"tensorParallel={self.tensor_parallel} does not divide LOCAL_WORLD_SIZE")

    @property
    def workers(self) -> int:
        """Pods in the job (the operator's unit: one batch share each)."""
        return self.world_size // self.local_world_size

    @property
    def worker(self) -> int:
        """This rank's pod (torchrun's GROUP_RANK)."""
        return self.rank // self.local_world_size

    @property
    def local_rank(self) -> int:
        return self.rank % self.local_world_size

    @property
    def data_parallel_size(self) -> int:
        return self.world_size // self.tensor_parallel

    @property
    def data_rank(self) -> int:
        return self.rank // self.tensor_parallel

    @property
    def tensor_rank(self) -> int:
        return self.rank % self.tensor_parallel

    @property
    def groups_per_worker(self) -> int:
        return self.local_world_size // self.tensor_parallel

    def data_batch_sizes(self, worker_shares: Sequence[int]) -> tuple[int, ...]:
        """Per data-parallel group batch sizes from the per-pod shares (same total)."""
        if len(worker_shares) != self.workers:
            raise ValueError(f"{len(worker_shares)} batch shares for {self.workers} pods")
        k = self.groups_per_worker
        return tuple(b // k + (1 if j < b % k else 0) for b in worker_shares for j in range(k))

    def worker_groups(self) -> range:
        """The data-parallel group indices inside this rank's pod."""
        first = self.worker * self.groups_per_worker
        return range(first, first + self.groups_per_worker)
