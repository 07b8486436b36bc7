"""Asynchronous momentum between passes: measured staleness in, the momentum every shard should hold out."""

from __future__ import annotations

from decimal import Decimal

from paceline.api import parse_momentum_tuning
from paceline.controller.retune import AsyncControl, retune_step

SPEEDS = {f"w{i}": 100.0 for i in range(4)}


def test_an_explicit_momentum_of_zero_is_kept_and_re_sent_as_zero() -> None:
    settings = parse_momentum_tuning({"policy": "Fixed", "floor": "0"}, target=Decimal("0"))
    state = AsyncControl.create(settings=settings, workers=4, initial_explicit=0.0)
    for _ in range(3):
        retune = retune_step(state, staleness={0: ([3, 3, 3], 3)}, worker_speeds=SPEEDS)
        assert retune is not None and retune.momentum == 0.0 and retune.version == 1


def test_a_retune_bumps_the_version_and_reads_each_shards_log_from_where_it_left() -> None:
    settings = parse_momentum_tuning({}, target=Decimal("0.9"))
    state = AsyncControl.create(settings=settings, workers=4, initial_explicit=0.15)
    logs = {"uid-ps0": ([3] * 500, 500), "uid-ps1": ([3] * 40, 40)}
    assert retune_step(state, staleness=logs, worker_speeds={}) is None
    assert state.cursors == {"uid-ps0": 500, "uid-ps1": 40}
    # a new PS pod (shard 1 restarted): its log is read from 0, the old incarnation's position is kept apart
    assert retune_step(state, staleness={"uid-ps1b": ([2] * 7, 7)}, worker_speeds={}) is None
    assert state.cursors == {"uid-ps0": 500, "uid-ps1": 40, "uid-ps1b": 7}
    retune = retune_step(state, staleness={}, worker_speeds={**SPEEDS, "w4": 100.0, "w5": 100.0})
    assert retune is not None and retune.applied is not None and retune.version == 2
    assert state.explicit == retune.momentum and state.status["explicit"] == f"{retune.momentum:.3f}"
