"""Shard assignment and the PS address list: pure, identical on every worker."""

from __future__ import annotations

import pytest

from paceline_worker.asynchronous import ParameterSpec, assign_shards, parse_ps_addrs
from paceline_worker.config import ConfigError

SPECS = [
    ParameterSpec(name="conv.weight", shape=(16, 1, 3, 3)),  # 144
    ParameterSpec(name="conv.bias", shape=(16,)),
    ParameterSpec(name="fc1.weight", shape=(64, 512)),  # 32768
    ParameterSpec(name="fc1.bias", shape=(64,)),
    ParameterSpec(name="fc2.weight", shape=(10, 64)),  # 640
    ParameterSpec(name="fc2.bias", shape=(10,)),
]


def test_every_tensor_lands_on_exactly_one_shard_in_model_order() -> None:
    layouts = assign_shards(SPECS, 3)
    indices = sorted(i for layout in layouts for i in layout.indices)
    assert indices == list(range(len(SPECS)))
    for layout in layouts:
        assert list(layout.indices) == sorted(layout.indices)
        assert [s.name for s in layout.specs] == [SPECS[i].name for i in layout.indices]


def test_largest_tensor_gets_its_own_shard_and_the_rest_are_balanced() -> None:
    layouts = assign_shards(SPECS, 2)
    assert layouts[0].indices == (2,)
    assert layouts[1].numel == sum(s.numel for s in SPECS) - 32768


def test_layout_is_deterministic_and_fingerprint_sees_shapes() -> None:
    assert assign_shards(SPECS, 2) == assign_shards(list(SPECS), 2)
    other = [*SPECS[:-1], ParameterSpec(name="fc2.bias", shape=(11,))]
    assert assign_shards(SPECS, 1)[0].fingerprint() != assign_shards(other, 1)[0].fingerprint()


def test_more_shards_than_tensors_leaves_empty_shards() -> None:
    layouts = assign_shards(SPECS[:2], 3)
    assert [layout.numel for layout in layouts] == [144, 16, 0]
    with pytest.raises(ValueError):
        assign_shards(SPECS, 0)


def test_ps_addresses() -> None:
    addrs = parse_ps_addrs("127.0.0.1:29600, ps-1.job.svc:29601,[::1]:7")
    assert [(a.host, a.port) for a in addrs] == [("127.0.0.1", 29600), ("ps-1.job.svc", 29601), ("::1", 7)]
    assert str(addrs[2]) == "[::1]:7"
    for bad in ("", "host", "host:0", "host:x", "a:1,,b:2"):
        with pytest.raises(ConfigError, match="PACELINE_PS_ADDRS"):
            parse_ps_addrs(bad)
