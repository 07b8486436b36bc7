"""Colwise -> elementwise chain -> rowwise: activations run on the colwise shard (the Megatron MLP).

The runtime cannot gather or scatter at an elementwise layer, only at module boundaries, so a
feature-split elementwise layer must sit on a chain from a colwise layer (its single consumer) to a
rowwise layer; the search must never pick anything else.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from paceline.plan_types import Executed, Layout, NodeCapacity, SplitStyle
from paceline.planner import DeviceCatalog, HeteroCostModel, plan_job
from paceline.planner.builder import GraphBuilder
from paceline.planner.configs import executable_configs, feature_dim
from paceline.planner.cost_models import Device, order_devices
from paceline.planner.executable import (
    consumers,
    executable_space,
    module_splits,
    pass_through,
    pass_through_layers,
    split_style,
)
from paceline.planner.graph import LayerGraph, OpKind
from paceline.planner.job import executable_candidates, executed_rows
from paceline.planner.strategy import SearchSpace, build_space, evaluate, plan_strategy

A100 = "NVIDIA-A100-SXM4-80GB"
CATALOG = DeviceCatalog()


def pods(count: int, gpus: int, product: str = A100) -> list[NodeCapacity]:
    return [
        NodeCapacity(name=f"n{i}", pool="p", gpu_product=product, gpus_allocatable=gpus, gpus_free=gpus)
        for i in range(count)
    ]


def grouped_model(p: int, per_node: int, t: int, product: str = A100) -> HeteroCostModel:
    kind = CATALOG.lookup(product)
    devices = order_devices([Device(node=f"n{i // per_node}", type=kind) for i in range(p)])
    return HeteroCostModel(devices=devices, catalog=CATALOG, group_size=t)


def megatron_mlp(*, acts: int = 1, batch: int = 64, width: int = 2048, fork: bool = False) -> LayerGraph:
    """fc1 (64 -> width) -> `acts` elementwise layers -> fc2 (width -> 64) -> loss; `fork`: the last
    activation also feeds a residual add after fc3 (width -> width), so it has two consumers."""
    g = GraphBuilder(name="mlp", min_split_size=1, modules_from_names=True)
    x = g.fc(None, (batch, 64), width, name="fc1")
    for i in range(acts):
        x = g.elementwise([x], g.shape(x), pointwise=1, name=f"act{i}")
    h = x
    if fork:
        y = g.fc(h, g.shape(h), width, name="fc3")
        x = g.elementwise([h, y], g.shape(y), name="add")
    x = g.fc(x, g.shape(x), 64, name="fc2")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


def _space(graph: LayerGraph, *, procs: int = 4, t: int = 2) -> SearchSpace:
    space = executable_space(graph, procs=procs, tensor_parallel=t)
    assert space is not None
    return space


# --- configurations ---------------------------------------------------------------------------------


def test_a_single_input_elementwise_layer_may_split_its_features() -> None:
    graph = megatron_mlp()
    act = graph.layer("act0")
    assert feature_dim(act, batch_dim="b") == "d1"
    rows = executable_configs(act, batch_dim="b", data_groups=2, tensor_parallel=2, feature=True)
    assert [list(r) for r in rows] == [[2, 1], [2, 2]]  # replicated, feature-split
    assert len(executable_configs(act, batch_dim="b", data_groups=4, tensor_parallel=1, feature=True)) == 1
    assert len(executable_configs(act, batch_dim="b", data_groups=2, tensor_parallel=2)) == 1  # not asked
    odd = megatron_mlp(width=2046).layer("act0")  # 4 does not divide 2046
    assert len(executable_configs(odd, batch_dim="b", data_groups=1, tensor_parallel=4, feature=True)) == 1
    add = megatron_mlp(fork=True).layer("add")
    assert feature_dim(add, batch_dim="b") is None  # two inputs


def test_pass_through_needs_a_chain_from_colwise_to_rowwise() -> None:
    def through(graph: LayerGraph, t: int = 2) -> set[str]:
        return {graph.layers[i].name for i in pass_through_layers(graph, t)}

    assert through(megatron_mlp()) == {"act0"}
    assert through(megatron_mlp(acts=3)) == {"act0", "act1", "act2"}
    assert through(megatron_mlp(), t=1) == set()
    assert through(megatron_mlp(fork=True)) == set()  # act0 feeds fc3 and the add
    g = GraphBuilder(name="no-rowwise", min_split_size=1, modules_from_names=True)
    x = g.fc(None, (8, 64), 64, name="fc")
    x = g.elementwise([x], g.shape(x), name="act")
    g.softmax_xent(x, g.shape(x), name="loss")  # the activation feeds no module
    assert through(g.build()) == set()
    g = GraphBuilder(name="no-colwise", min_split_size=1, modules_from_names=True)
    x = g.fc(None, (8, 64), 64, name="fc1")
    x = g.norm(x, g.shape(x), axis=-1, name="norm")
    x = g.elementwise([x], g.shape(x), name="act")  # fed by a norm, not a module
    x = g.fc(x, g.shape(x), 64, name="fc2")
    g.softmax_xent(x, g.shape(x), name="loss")
    assert through(g.build()) == set()


# --- pairing through the chain ------------------------------------------------------------------------


def _pick(space: SearchSpace, wanted: dict[str, str]) -> tuple[int, ...]:
    """Configuration per layer: `colwise` / `rowwise` / `feature` by name, replicated otherwise."""

    def kind(layer_index: int, cfg: np.ndarray) -> str:
        layer = space.graph.layers[layer_index]
        style = split_style(layer, tuple(int(c) for c in cfg))
        if style is not None:
            return str(style)
        return "feature" if int(np.prod(cfg)) > cfg[0] else "replicated"

    return tuple(
        next(j for j, cfg in enumerate(ls.configs) if kind(i, cfg) == wanted.get(layer.name, "replicated"))
        for i, (layer, ls) in enumerate(zip(space.graph.layers, space.layers, strict=True))
    )


def test_colwise_activation_rowwise_is_free_and_keeps_the_shard() -> None:
    graph = megatron_mlp(acts=2)
    space = _space(graph)
    model = grouped_model(4, 2, 2)
    chosen = {"fc1": "colwise", "act0": "feature", "act1": "feature", "fc2": "rowwise"}
    strategy = evaluate(space, _pick(space, chosen), model)
    assert strategy.edge_seconds == 0.0
    fc1, fc2 = module_splits(space, strategy)
    assert (fc1.module, fc1.style, fc1.input, fc1.output) == (
        "fc1",
        SplitStyle.COLWISE,
        Layout.REPLICATE,
        Layout.SHARD,
    )
    assert (fc2.module, fc2.style, fc2.input, fc2.output) == (
        "fc2",
        SplitStyle.ROWWISE,
        Layout.SHARD,
        Layout.REPLICATE,
    )
    rows = executed_rows(space, strategy, tensor_parallel=2)
    assert [r["kind"] for r in rows] == [
        "colwise",
        "sharded (follows fc1)",
        "sharded (follows fc1)",
        "rowwise",
        "replicated",
    ]
    gathered = evaluate(space, _pick(space, {"fc1": "colwise", "fc2": "rowwise"}), model)
    assert strategy.total_seconds < gathered.total_seconds  # all-gather after fc1, slice before fc2


@pytest.mark.parametrize(
    "chosen",
    [
        {"act0": "feature"},  # replicated fc1 -> feature-split: a scatter at the activation
        {"fc1": "rowwise", "act0": "feature", "fc2": "rowwise"},
        {"fc1": "colwise", "act0": "feature"},  # feature-split -> replicated fc2: a gather
        {"fc1": "colwise", "act0": "feature", "fc2": "colwise"},
        {"fc1": "colwise", "act0": "feature", "act1": "replicated", "fc2": "rowwise"},
        {"fc1": "colwise", "act0": "replicated", "act1": "feature", "fc2": "rowwise"},
    ],
)
def test_feature_split_elsewhere_is_impossible(chosen: dict[str, str]) -> None:
    space = _space(megatron_mlp(acts=2))
    strategy = evaluate(space, _pick(space, chosen), grouped_model(4, 2, 2))
    assert strategy.total_seconds == float("inf")
    with pytest.raises(ValueError, match="feature-split"):
        module_splits(space, strategy)


# --- the DP picks only what runs: brute force over tiny graphs ----------------------------------------


def tiny_graph(seed: int) -> LayerGraph:
    """A random chain of fc / activation / norm layers with an optional residual add (forks)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder(name=f"tiny{seed}", min_split_size=1, modules_from_names=True)
    x = g.fc(None, (8, 8), int(rng.choice([4, 8])), name="fc0")
    keep = x
    for i in range(int(rng.integers(3, 6))):
        op = rng.choice(["fc", "act", "act", "norm"])
        if op == "fc":
            x = g.fc(x, g.shape(x), int(rng.choice([4, 8])), name=f"fc{i + 1}")
        elif op == "act":
            x = g.elementwise([x], g.shape(x), pointwise=1, name=f"act{i}")
        else:
            x = g.norm(x, g.shape(x), axis=-1, name=f"norm{i}")
        if rng.random() < 0.3:
            keep = x
    if keep != x and g.shape(keep) == g.shape(x) and rng.random() < 0.7:
        x = g.elementwise([keep, x], g.shape(x), name="add")
    if rng.random() < 0.5:
        x = g.fc(x, g.shape(x), 4, name="head")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


def runtime_valid(space: SearchSpace, choice: tuple[int, ...]) -> bool:
    """Written from the runtime's rules, independently of the planner: a layer running on feature
    shards is elementwise, fed by a colwise layer whose only consumer it is, or by another such layer,
    and feeds exactly one layer: another such layer or a rowwise layer (as its input)."""
    graph = space.graph
    uses = consumers(graph)
    configs = [tuple(int(c) for c in ls.configs[j]) for ls, j in zip(space.layers, choice, strict=True)]
    styles = [split_style(layer, cfg) for layer, cfg in zip(graph.layers, configs, strict=True)]
    feature = [
        layer.op == OpKind.ELEMENTWISE
        and any(c > 1 for n, c in zip(layer.dim_names, cfg, strict=True) if n != "b")
        for layer, cfg in zip(graph.layers, configs, strict=True)
    ]
    for i, layer in enumerate(graph.layers):
        if not feature[i]:
            continue
        if len(layer.inputs) != 1 or layer.inputs[0].source is None or len(uses[i]) != 1:
            return False
        src = graph.index[layer.inputs[0].source]
        if not (feature[src] or (styles[src] == SplitStyle.COLWISE and len(uses[src]) == 1)):
            return False
        dst, pos = uses[i][0]
        if not (feature[dst] or (styles[dst] == SplitStyle.ROWWISE and pos == 0)):
            return False
    return True


def every_feature_split(graph: LayerGraph) -> SearchSpace:
    """The executable configurations, with a feature split offered to every elementwise layer that can
    take one (not only those `pass_through_layers` picks), and no transition forbidden."""
    uses = consumers(graph)
    single = {layer.name: len(u) == 1 for layer, u in zip(graph.layers, uses, strict=True)}
    return build_space(
        graph,
        4,
        configs_of=lambda layer: executable_configs(
            layer, batch_dim="b", data_groups=2, tensor_parallel=2, colwise=single[layer.name], feature=True
        ),
    )


def brute_force(space: SearchSpace, model: HeteroCostModel) -> float:
    """The cheapest runtime-valid assignment of `space`."""
    best = float("inf")
    for choice in itertools.product(*(range(len(ls.configs)) for ls in space.layers)):
        if runtime_valid(space, choice):
            best = min(best, evaluate(space, choice, model).total_seconds)
    return best


@pytest.mark.parametrize("seed", range(24))
def test_dp_optimum_equals_the_best_runtime_valid_assignment(seed: int) -> None:
    graph = tiny_graph(seed)
    space = _space(graph)
    model = grouped_model(4, 2, 2)
    for choice in itertools.product(*(range(len(ls.configs)) for ls in space.layers)):
        cost = evaluate(space, choice, model).total_seconds
        assert np.isfinite(cost) == runtime_valid(space, choice), (choice, cost)
    strategy = plan_strategy(space, model)
    assert strategy.total_seconds == pytest.approx(brute_force(space, model), rel=1e-9)
    # nothing runnable is left out: offering every elementwise layer a feature split finds no better
    assert strategy.total_seconds == pytest.approx(brute_force(every_feature_split(graph), model), rel=1e-9)
    assert runtime_valid(space, strategy.choice)
    module_splits(space, strategy)  # describable: raises for a chain the runtime cannot run


def test_the_brute_force_graphs_exercise_chains_and_forks() -> None:
    through = [pass_through_layers(tiny_graph(seed), 2) for seed in range(24)]
    assert sum(bool(t) for t in through) >= 3
    assert any("add" in [layer.name for layer in tiny_graph(seed).layers] for seed in range(24))


# --- plan_job on a traced model ---------------------------------------------------------------------


def test_traced_megatron_mlp_pairs_through_relu() -> None:
    torch = pytest.importorskip("torch")
    from paceline.planner.fx_trace import trace_module

    model = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 64))
    graph = trace_module(model, (64, 64))
    assert graph.layer("_1").op == OpKind.ELEMENTWISE
    plan = plan_job(graph=graph, nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=64)
    assert plan.executed == Executed.HYBRID and plan.tensor_parallel == 2
    assert [(s.module, s.style, s.input, s.output) for s in plan.splits] == [
        ("0", SplitStyle.COLWISE, Layout.REPLICATE, Layout.SHARD),
        ("2", SplitStyle.ROWWISE, Layout.SHARD, Layout.REPLICATE),
    ]
    assert [row["kind"] for row in plan.layers] == [
        "colwise",
        "sharded (follows _0)",
        "rowwise",
        "replicated",
    ]
    candidates, _ = executable_candidates(graph, _devices(4, 2), CATALOG, 2)
    data_parallel = next(c for c in candidates if c.tensor_parallel == 1).strategy.total_seconds
    assert plan.predicted_step_s is not None and plan.predicted_step_s < data_parallel
    assert plan.baseline_step_s is not None and plan.predicted_step_s < plan.baseline_step_s


def test_traced_relu_with_two_consumers_does_not_pair() -> None:
    torch = pytest.importorskip("torch")
    from paceline.planner.fx_trace import trace_module

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(64, 2048)
            self.fc2 = torch.nn.Linear(2048, 2048)
            self.fc3 = torch.nn.Linear(2048, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x))
            return self.fc3(self.fc2(h) + h)

    graph = trace_module(Residual(), (64, 64))
    assert pass_through_layers(graph, 2) == set()
    plan = plan_job(graph=graph, nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=64)
    assert not any(row["kind"].startswith("sharded") for row in plan.layers)
    assert all(s.module != "fc1" or s.output == Layout.REPLICATE for s in plan.splits)


def test_traced_bias_broadcast_keeps_the_features_whole() -> None:
    torch = pytest.importorskip("torch")
    from paceline.planner.fx_trace import trace_module

    class Biased(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(64, 256)
            self.bias = torch.nn.Parameter(torch.zeros(256))
            self.fc2 = torch.nn.Linear(256, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x) + self.bias))

    graph = trace_module(Biased(), (8, 64))
    add, relu = (layer for layer in graph.layers if layer.op == OpKind.ELEMENTWISE)
    assert add.fixed == ("d1",) and feature_dim(add, batch_dim="b") is None  # x + bias: whole features
    assert relu.fixed == () and feature_dim(relu, batch_dim="b") == "d1"
    assert pass_through_layers(graph, 2) == set()  # the chain fc1 -> add -> relu -> fc2 is broken


def _devices(count: int, per_node: int) -> tuple[Device, ...]:
    kind = CATALOG.lookup(A100)
    return order_devices([Device(node=f"n{i // per_node}", type=kind) for i in range(count)])


def test_pass_through_rejects_an_invalid_strategy_for_rows() -> None:
    space = _space(megatron_mlp())
    bad = evaluate(space, _pick(space, {"act0": "feature"}), grouped_model(4, 2, 2))
    with pytest.raises(ValueError, match="'act0' runs feature-split"):
        pass_through(space, bad)
