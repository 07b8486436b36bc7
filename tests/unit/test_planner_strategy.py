"""Strategies: PaSE's known AlexNet pattern, never worse than data parallel, always within device memory."""

from __future__ import annotations

import numpy as np
import pytest

from paceline.planner import DeviceCatalog, HeteroCostModel, PaseCostModel, preset
from paceline.planner.builder import GraphBuilder
from paceline.planner.cost_models import Device, order_devices, weakest_device_model
from paceline.planner.graph import LayerGraph
from paceline.planner.strategy import (
    DoesNotFit,
    build_space,
    data_parallel_choice,
    evaluate,
    plan_strategy,
)


def _config(graph: LayerGraph, configs: tuple[tuple[int, ...], ...], name: str) -> dict[str, int]:
    layer = graph.layer(name)
    return dict(zip(layer.dim_names, configs[graph.index[name]], strict=True))


def test_alexnet_p32_matches_pase_table2() -> None:
    graph = preset("alexnet")
    best = plan_strategy(build_space(graph, 32), PaseCostModel(procs=32))
    for conv in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        cfg = _config(graph, best.configs, conv)
        assert cfg["b"] >= 16 and cfg["n"] == 1, (conv, cfg)  # convolutions: split on batch
    for conv in ("conv1", "conv2", "conv3"):
        assert _config(graph, best.configs, conv) == {"b": 32, "c": 1, "h": 1, "w": 1, "r": 1, "s": 1, "n": 1}
    # fully connected layers: split on the model dims only (paper: FC1, FC3 (1, 4, 8); FC2 (1, 8, 4))
    assert _config(graph, best.configs, "fc6") == {"b": 1, "n": 4, "k": 8}
    assert _config(graph, best.configs, "fc7") == {"b": 1, "n": 8, "k": 4}
    assert _config(graph, best.configs, "fc8") == {"b": 1, "n": 4, "k": 8}


@pytest.mark.parametrize("name", ["alexnet", "inceptionv3", "rnnlm", "transformer"])
def test_never_worse_than_data_parallel(name: str) -> None:
    graph = preset(name)
    space = build_space(graph, 8)
    model = PaseCostModel(procs=8)
    best = plan_strategy(space, model)
    dp = evaluate(space, data_parallel_choice(space), model)
    assert best.total_seconds <= dp.total_seconds * (1 + 1e-9)
    assert best.total_seconds == pytest.approx(sum(best.layer_seconds) + best.edge_seconds)


def _mixed(counts: dict[str, int], catalog: DeviceCatalog) -> tuple[Device, ...]:
    return order_devices(
        [
            Device(node=f"{product}-{i // 8}", type=catalog.lookup(product))
            for product, n in counts.items()
            for i in range(n)
        ]
    )


def _wide_mlp(width: int, layers: int, batch: int = 8) -> LayerGraph:
    g = GraphBuilder(name="wide", min_split_size=1)
    x: str | None = None
    shape: tuple[int, ...] = (batch, width)
    for i in range(layers):
        x = g.fc(x, shape, width, name=f"fc{i}")
        shape = g.shape(x)
    assert x is not None
    g.softmax_xent(x, shape, name="loss")
    return g.build()


def test_plan_never_exceeds_device_memory() -> None:
    # links so slow that, memory aside, keeping every layer whole on one GPU would be cheapest
    slow_links = {"product": "Tesla-T4", "intraNodeGbps": 0.01, "interNodeGbps": 0.01}
    catalog = DeviceCatalog().with_overrides({"devices": [slow_links]})
    devices = _mixed({"Tesla-T4": 4}, catalog)
    model = HeteroCostModel(devices=devices, catalog=catalog)
    space = build_space(_wide_mlp(width=16384, layers=5), 4)
    free = plan_strategy(space, model, respect_memory=False)
    assert free.peak_memory_fraction is not None and free.peak_memory_fraction > 1.0  # the test has teeth
    best = plan_strategy(space, model)
    assert best.peak_memory_fraction is not None and best.peak_memory_fraction <= 1.0
    used = np.zeros(len(devices))
    for ls, c in zip(space.layers, best.choice, strict=True):
        layer_bytes = model.device_bytes(ls.terms, c)
        assert layer_bytes is not None
        used += layer_bytes
    assert np.all(used <= model.capacity_bytes)


def test_model_that_cannot_fit_is_refused() -> None:
    catalog = DeviceCatalog()
    model = HeteroCostModel(devices=_mixed({"Tesla-T4": 2}, catalog), catalog=catalog)
    with pytest.raises(DoesNotFit):
        plan_strategy(build_space(_wide_mlp(width=65536, layers=2), 2), model)


def test_speed_proportional_shares_beat_the_weakest_device_assumption() -> None:
    catalog = DeviceCatalog()
    devices = _mixed({"NVIDIA-H100-80GB-HBM3": 8, "NVIDIA-A100-SXM4-80GB": 8}, catalog)
    space = build_space(preset("rnnlm"), len(devices))
    proportional = HeteroCostModel(devices=devices, catalog=catalog, proportional=True)
    equal = HeteroCostModel(devices=devices, catalog=catalog, proportional=False)
    dp = data_parallel_choice(space)
    # the same data-parallel strategy is faster with shares by speed than with equal shares
    assert evaluate(space, dp, proportional).total_seconds < evaluate(space, dp, equal).total_seconds
    ours = plan_strategy(space, proportional)
    pase_choice = plan_strategy(space, weakest_device_model(devices, catalog)).choice
    assert ours.total_seconds < evaluate(space, pase_choice, equal).total_seconds


def test_groups_on_one_node_use_fast_links() -> None:
    catalog = DeviceCatalog()
    devices = _mixed({"NVIDIA-A100-SXM4-80GB": 16}, catalog)
    model = HeteroCostModel(devices=devices, catalog=catalog)
    one_node, two_nodes = model._bw_group[1, 8], model._bw_group[1, 16]
    assert one_node > 5 * two_nodes
