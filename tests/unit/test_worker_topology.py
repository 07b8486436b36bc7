"""Rank layout under torchrun: pods, data-parallel groups, tensor-parallel peers, per-group batch sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paceline_worker.topology import Topology


def test_two_pods_of_two_ranks_with_tensor_parallel_two() -> None:
    ranks = [Topology(rank=r, world_size=4, local_world_size=2, tensor_parallel=2) for r in range(4)]
    assert [(t.worker, t.local_rank, t.data_rank, t.tensor_rank) for t in ranks] == [
        (0, 0, 0, 0),
        (0, 1, 0, 1),
        (1, 0, 1, 0),
        (1, 1, 1, 1),
    ]
    assert ranks[0].data_batch_sizes([5, 9]) == (5, 9)


def test_pod_share_is_split_over_its_data_groups() -> None:
    t = Topology(rank=5, world_size=8, local_world_size=4, tensor_parallel=1)
    assert t.worker == 1 and list(t.worker_groups()) == [4, 5, 6, 7]
    assert t.data_batch_sizes([10, 7]) == (3, 3, 2, 2, 2, 2, 2, 1)


def test_inconsistent_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of LOCAL_WORLD_SIZE"):
        Topology(rank=0, world_size=3, local_world_size=2)
    with pytest.raises(ValueError, match="does not divide LOCAL_WORLD_SIZE"):
        Topology(rank=0, world_size=4, local_world_size=2, tensor_parallel=4)
    with pytest.raises(ValueError, match="3 batch shares for 2 pods"):
        Topology(rank=0, world_size=4, local_world_size=2).data_batch_sizes([1, 2, 3])


@given(
    shares=st.lists(st.integers(0, 500), min_size=1, max_size=6),
    local=st.sampled_from([1, 2, 4, 8]),
    tp_exp=st.integers(0, 3),
)
def test_group_sizes_keep_every_pods_share(shares: list[int], local: int, tp_exp: int) -> None:
    tp = min(2**tp_exp, local)
    t = Topology(rank=0, world_size=local * len(shares), local_world_size=local, tensor_parallel=tp)
    sizes = t.data_batch_sizes(shares)
    k = t.groups_per_worker
    assert len(sizes) == t.data_parallel_size == len(shares) * k
    for pod, share in enumerate(shares):
        mine = sizes[pod * k : (pod + 1) * k]
        assert sum(mine) == share and max(mine) - min(mine) <= 1
