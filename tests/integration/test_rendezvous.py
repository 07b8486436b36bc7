"""Paceline's rendezvous on a real TCP store over loopback: ranks that come early wait for the late ones
without blocking, and a rank that leaves before it completes is not counted."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from paceline_worker.rendezvous import Rendezvous, RendezvousError
from paceline_worker.wire import Generation

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _tp_pods import free_port

pytestmark = pytest.mark.integration


def generation(number: int, port: int, pods: int = 2) -> Generation:
    return Generation(generation=number, nnodes=pods, node_rank=0, master_addr="127.0.0.1", master_port=port)


def member(g: Generation, pod: int, local_rank: int = 0, ranks_per_pod: int = 1) -> Rendezvous:
    placed = Generation(
        generation=g.generation,
        nnodes=g.nnodes,
        node_rank=pod,
        master_addr=g.master_addr,
        master_port=g.master_port,
    )
    return Rendezvous(placed, local_rank=local_rank, local_world_size=ranks_per_pod, timeout_s=30)


def test_early_ranks_wait_for_late_ones_then_all_complete() -> None:
    g = generation(4, free_port())
    early = [member(g, 1, r, 2).start() for r in range(2)]  # pod 1 comes before rank 0's store is up
    time.sleep(0.5)
    assert not any(r.complete for r in early)
    late = [member(g, 0, r, 2).start() for r in range(2)]
    everyone = early + late
    try:
        assert all(r.wait(timeout_s=120, abort=lambda: False) for r in everyone)
        assert sorted(r.rank for r in everyone) == [0, 1, 2, 3] and {r.world_size for r in everyone} == {4}
        everyone[0].store().set("x", "1")
        assert everyone[3].store().get("x") == b"1"  # one store, shared through the same prefix
    finally:
        for r in everyone:
            r.close()


def test_a_rank_that_left_is_not_counted_and_a_waiting_rank_can_be_aborted() -> None:
    g = generation(5, free_port(), pods=3)
    host = member(g, 0).start()
    leaver = member(g, 1).start()
    time.sleep(1.0)
    leaver.close()  # e.g. it moved on to a newer generation
    stayer = member(g, 2).start()
    try:
        give_up = time.monotonic() + 2.0  # two of three ranks present: it must not complete
        assert not host.wait(timeout_s=30, abort=lambda: time.monotonic() > give_up)
        assert not host.complete and not stayer.complete
        with pytest.raises(RendezvousError, match="not all 3 ranks joined"):
            stayer.wait(timeout_s=0.5, abort=lambda: False)
    finally:
        host.close()
        stayer.close()
