"""The executable space: only what the worker runtime runs (data parallel x Megatron splits inside pods)."""

from __future__ import annotations

import numpy as np
import pytest

from paceline.builders import plan_from_json, plan_to_json
from paceline.plan_types import Executed, Layout, NodeCapacity, SplitStyle, sharding_map
from paceline.planner import (
    DeviceCatalog,
    GraphError,
    HeteroCostModel,
    PlacementError,
    executable,
    graph_from_dict,
    graph_to_dict,
    plan_job,
    preset,
)
from paceline.planner.builder import GraphBuilder
from paceline.planner.configs import executable_configs, module_dims
from paceline.planner.cost_models import Device, order_devices
from paceline.planner.executable import executable_space, module_splits, split_style
from paceline.planner.graph import LayerGraph
from paceline.planner.job import executable_candidates
from paceline.planner.layer_terms import LayerTerms, allreduce_words, layer_terms
from paceline.planner.strategy import SearchSpace, build_space, data_parallel_choice, evaluate, plan_strategy

H100 = "NVIDIA-H100-80GB-HBM3"
CATALOG = DeviceCatalog()


def pods(count: int, gpus: int, product: str = H100) -> list[NodeCapacity]:
    return [
        NodeCapacity(name=f"n{i}", pool="p", gpu_product=product, gpus_allocatable=gpus, gpus_free=gpus)
        for i in range(count)
    ]


def devices(count: int, per_node: int, product: str = H100) -> tuple[Device, ...]:
    kind = CATALOG.lookup(product)
    return order_devices([Device(node=f"n{i // per_node}", type=kind) for i in range(count)])


def mlp(*, batch: int = 16, width: int = 8192, modules: bool = True, relu_module: bool = False) -> LayerGraph:
    """fc 1024 -> width -> 1024 (+ loss); optionally a separate relu layer between the two fcs."""
    g = GraphBuilder(name="wide-mlp", min_split_size=1)
    x = g.fc(None, (batch, 1024), width, pointwise=0 if relu_module else 1, name="fc1")
    if relu_module:
        x = g.elementwise([x], g.shape(x), pointwise=1, name="relu")
    x = g.fc(x, g.shape(x), 1024, name="fc2")
    g.softmax_xent(x, g.shape(x), name="loss")
    graph = g.build()
    if not modules:
        return graph
    doc = graph_to_dict(graph)
    for layer in doc["layers"]:
        if layer["name"].startswith("fc"):
            layer["module"] = f"net.{layer['name']}"
    return graph_from_dict(doc)


def small_cnn(batch: int = 256) -> LayerGraph:
    g = GraphBuilder(name="cnn", modules_from_names=True)
    x = g.conv(None, (batch, 3, 32, 32), out_channels=64, kernel=(3, 3), pad=(1, 1), pointwise=1, name="c1")
    x = g.conv(x, g.shape(x), out_channels=64, kernel=(3, 3), pad=(1, 1), pointwise=1, name="c2")
    x = g.pool(x, g.shape(x), kernel=(2, 2), stride=2, name="pool")
    x = g.flatten(x, name="flat")
    x = g.fc(x, g.shape(x), 10, name="fc")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


# --- configurations ---------------------------------------------------------------------------------


def _patterns(layer_graph: LayerGraph, name: str, *, groups: int, t: int) -> set[tuple[tuple[str, int], ...]]:
    layer = layer_graph.layer(name)
    configs = executable_configs(layer, batch_dim="b", data_groups=groups, tensor_parallel=t)
    return {tuple((d, int(c)) for d, c in zip(layer.dim_names, row, strict=True) if c > 1) for row in configs}


def test_configs_are_replicated_colwise_or_rowwise_with_batch_d() -> None:
    graph = mlp()
    assert _patterns(graph, "fc1", groups=4, t=2) == {
        (("b", 4),),
        (("b", 4), ("n", 2)),
        (("b", 4), ("k", 2)),
    }
    assert _patterns(graph, "loss", groups=4, t=2) == {(("b", 4),)}  # no module: replicated only
    assert _patterns(graph, "fc1", groups=8, t=1) == {(("b", 8),)}  # t=1: data parallel only
    unnamed = mlp(modules=False)
    assert _patterns(unnamed, "fc1", groups=4, t=2) == {(("b", 4),)}
    layer = graph.layer("fc1")
    no_col = executable_configs(layer, batch_dim="b", data_groups=2, tensor_parallel=2, colwise=False)
    assert [list(r) for r in no_col] == [[2, 1, 1], [2, 1, 2]]
    odd = mlp(width=1026).layer("fc1")  # 1026 output features: 4 does not divide them
    assert {tuple(r) for r in executable_configs(odd, batch_dim="b", data_groups=1, tensor_parallel=4)} == {
        (1, 1, 1),
        (1, 1, 4),
    }
    with pytest.raises(ValueError, match="batch 16 < 32"):
        executable_configs(layer, batch_dim="b", data_groups=32, tensor_parallel=1)


def test_every_preset_config_is_executable() -> None:
    for name in ("alexnet", "rnnlm", "transformer"):
        graph = preset(name)
        space = executable_space(graph, procs=16, tensor_parallel=4)
        assert space is not None
        for layer, ls in zip(graph.layers, space.layers, strict=True):
            dims = module_dims(layer)
            for row in ls.configs:
                split = {d: int(c) for d, c in zip(layer.dim_names, row, strict=True) if c > 1}
                assert split.pop("b", 4) == 4
                if dims is None:
                    assert not split, (layer.name, split)
                else:
                    assert split in ({}, {dims.out_dim: 4}, {dims.in_dim: 4}), (layer.name, split)


def test_embedding_splits_dim_colwise_and_vocabulary_rowwise() -> None:
    g = GraphBuilder(name="lm", min_split_size=1)
    x = g.embedding((8, 4), 1000, 64, name="tok", module="tok_emb")
    x = g.fc(x, g.shape(x), 1000, name="head", module="head")
    g.softmax_xent(x, g.shape(x), name="loss")
    graph = g.build()
    dims = module_dims(graph.layer("tok"))
    assert dims is not None and (dims.kind, dims.out_dim, dims.in_dim) == ("embedding", "e", "v")
    space = executable_space(graph, procs=4, tensor_parallel=2)
    assert space is not None
    tok = graph.layer("tok")
    choice = tuple(len(ls.configs) - 1 for ls in space.layers)  # the last config: rowwise where offered
    splits = module_splits(space, evaluate(space, choice, _uniform(4, 2)))
    by_module = {s.module: s for s in splits}
    assert by_module["tok_emb"].style == SplitStyle.ROWWISE and by_module["tok_emb"].shape == (1000, 64)
    assert by_module["head"].shape == (1000, 64)  # Linear(64, 1000).weight is (out, in)
    assert tok.module == "tok_emb"


def language_model(batch: int = 8, seq: int = 4, vocab: int = 1000, dim: int = 64) -> LayerGraph:
    g = GraphBuilder(name="lm", min_split_size=1)
    x = g.embedding((batch, seq), vocab, dim, name="tok", module="tok_emb")
    x = g.fc(x, g.shape(x), vocab, name="head", module="head")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


def test_embeddings_cost_an_index_gather_in_the_executable_space() -> None:
    graph = language_model()
    space = executable_space(graph, procs=4, tensor_parallel=2)
    assert space is not None
    tok = space.layers[0]
    assert [list(r) for r in tok.configs] == [[2, 1, 1, 1], [2, 1, 2, 1], [2, 1, 1, 2]]  # b l e v
    out = 8 // 2 * 4 * 64  # output elements per rank: batch share x seq x dim
    # replicated: the whole lookup; colwise: its share of the dim; rowwise: the whole (masked) lookup
    np.testing.assert_allclose(tok.terms.comp, [out, out / 2, out])
    np.testing.assert_allclose(tok.terms.words_model, [0, 0, allreduce_words(np.asarray(out), 2)])
    np.testing.assert_allclose(tok.terms.weights, [64_000, 32_000, 32_000])  # the table, split by t
    np.testing.assert_allclose(tok.terms.activations, [out, out / 2, out])
    one_hot = _terms(graph, "tok", [list(r) for r in tok.configs])  # PaSE's terms for the same configs
    np.testing.assert_allclose(tok.terms.words_batch, one_hot.words_batch)  # table-gradient all-reduce
    np.testing.assert_allclose(one_hot.comp, 3 * out * 1000 / np.asarray([1, 2, 2]))  # b l v e FLOPs
    assert one_hot.words_model[1] == 8 // 2 * 4 * 1000  # PaSE: all-reduce of a one-hot input gradient
    model = _uniform(4, 2, group_size=2)
    seconds = model.layer_seconds(tok.terms)
    assert seconds[1] < seconds[2]  # colwise beats rowwise: no all-reduce, a share of the lookup
    head = space.layers[1]  # other layers keep PaSE's terms
    np.testing.assert_allclose(head.terms.comp, _terms(graph, "head", [list(r) for r in head.configs]).comp)


def test_pase_space_keeps_the_one_hot_embedding() -> None:
    graph = language_model()
    pase = build_space(graph, 4)
    tok = pase.layers[0]
    one_hot = _terms(graph, "tok", [list(r) for r in tok.configs])
    np.testing.assert_array_equal(tok.terms.comp, one_hot.comp)
    np.testing.assert_array_equal(tok.terms.words_model, one_hot.words_model)


def test_an_embedding_is_not_split_for_one_hot_flops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long sequences over a 4096-token vocabulary in front of a wide MLP on 2 pods x 4 H100. As a
    one-hot GEMM (3 b l v e FLOPs) a replicated table costs t times a huge GEMM, so the vocabulary was
    split (rowwise); as the gather the runtime runs, replicating it is cheaper than the all-reduce."""
    g = GraphBuilder(name="long", min_split_size=1)
    x = g.embedding((16, 4096), 4096, 2048, name="tok", module="tok")
    x = g.fc(x, g.shape(x), 8192, name="fc1", module="fc1")
    x = g.elementwise([x], g.shape(x), pointwise=1, name="act")
    x = g.fc(x, g.shape(x), 2048, name="fc2", module="fc2")
    g.softmax_xent(x, g.shape(x), name="loss")
    graph = g.build()

    def kinds() -> list[str]:
        plan = plan_job(graph=graph, nodes=pods(2, 4), workers=2, gpus_per_worker=4, global_batch=16)
        assert plan.executed == Executed.HYBRID
        return [row["kind"] for row in plan.layers]

    assert kinds() == ["replicated", "colwise", "sharded (follows fc1)", "rowwise", "replicated"]
    monkeypatch.setattr(executable, "gather_terms", lambda terms, *_, **__: terms)  # PaSE's costing
    assert kinds()[0] == "rowwise"


def test_t1_space_is_exactly_data_parallel() -> None:
    graph = preset("alexnet")  # batch 128 on 8 GPUs: PaSE's rules allow the full batch split too
    devs = devices(8, 4)
    space = executable_space(graph, procs=8, tensor_parallel=1)
    assert space is not None and all(len(ls.configs) == 1 for ls in space.layers)
    pase = build_space(graph, 8)
    dp = data_parallel_choice(pase)
    assert [tuple(ls.configs[0]) for ls in space.layers] == [
        tuple(ls.configs[c]) for ls, c in zip(pase.layers, dp, strict=True)
    ]
    ours = plan_strategy(space, HeteroCostModel(devices=devs, catalog=CATALOG, group_size=1))
    today = evaluate(pase, dp, HeteroCostModel(devices=devs, catalog=CATALOG))
    assert ours.total_seconds == pytest.approx(today.total_seconds, rel=1e-12)
    assert ours.configs == today.configs


# --- cost model -------------------------------------------------------------------------------------


def _uniform(p: int, per_node: int, group_size: int = 0) -> HeteroCostModel:
    return HeteroCostModel(devices=devices(p, per_node), catalog=CATALOG, group_size=group_size)


def _terms(graph: LayerGraph, name: str, configs: list[list[int]]) -> LayerTerms:
    layer = graph.layer(name)
    shapes = [None if t.source is None else graph.layer(t.source).output_shape for t in layer.inputs]
    return layer_terms(layer, np.asarray(configs), batch_dim="b", input_shapes=shapes)


def _bytes(model: HeteroCostModel, terms: LayerTerms, index: int) -> np.ndarray:
    used = model.device_bytes(terms, index)
    assert used is not None
    return used


def test_group_size_mode_equals_default_when_model_split_is_the_group() -> None:
    graph = mlp()
    terms = _terms(graph, "fc1", [[2, 2, 1], [2, 1, 2]])  # model split 2 = the group
    default, grouped = _uniform(4, 2), _uniform(4, 2, group_size=2)
    np.testing.assert_allclose(grouped.layer_seconds(terms), default.layer_seconds(terms))
    for i in (0, 1):
        np.testing.assert_allclose(_bytes(grouped, terms, i), _bytes(default, terms, i))
    np.testing.assert_allclose(
        np.asarray(grouped.memory_fraction(terms)), np.asarray(default.memory_fraction(terms))
    )
    whole = _terms(graph, "fc1", [[1, 4, 1], [1, 2, 2]])  # one group of 4
    np.testing.assert_allclose(
        _uniform(4, 4, group_size=4).layer_seconds(whole), _uniform(4, 4).layer_seconds(whole)
    )


def test_replicated_layers_pay_t_times_the_compute() -> None:
    g = GraphBuilder(name="act")
    g.elementwise([None], (64, 4096), pointwise=3, name="act")  # compute only: no collectives
    graph = g.build()
    data_parallel = _terms(graph, "act", [[8, 1]])  # batch over all 8 GPUs
    replicated = _terms(graph, "act", [[2, 1]])  # batch over 2 groups of 4, each computing it 4 times
    dp_s = _uniform(8, 8).layer_seconds(data_parallel)[0]
    tp_s = _uniform(8, 8, group_size=4).layer_seconds(replicated)[0]
    assert tp_s == pytest.approx(4 * dp_s)
    assert (_bytes(_uniform(8, 8, group_size=4), replicated, 0) > 0).all()  # every GPU holds its group's part
    assert (_bytes(_uniform(8, 8), replicated, 0) > 0).sum() == 2  # PaSE's mapping: 2 GPUs, 6 idle
    with pytest.raises(ValueError, match="group_size 3"):
        _uniform(8, 8, group_size=3)


# --- pairing ----------------------------------------------------------------------------------------


def _choose(space: SearchSpace, styles: dict[str, SplitStyle]) -> tuple[int, ...]:
    """Configuration index per layer: the named style, replicated for layers not named."""
    return tuple(
        next(
            i for i, cfg in enumerate(ls.configs) if split_style(layer, tuple(cfg)) == styles.get(layer.name)
        )
        for layer, ls in zip(space.graph.layers, space.layers, strict=True)
    )


def test_colwise_feeding_rowwise_directly_stays_sharded_and_is_free() -> None:
    graph = mlp()
    space = executable_space(graph, procs=4, tensor_parallel=2)
    assert space is not None
    model = _uniform(4, 2, group_size=2)
    paired = evaluate(space, _choose(space, {"fc1": SplitStyle.COLWISE, "fc2": SplitStyle.ROWWISE}), model)
    fc1, fc2 = module_splits(space, paired)
    assert (fc1.module, fc1.style, fc1.output, fc1.input) == (
        "net.fc1",
        SplitStyle.COLWISE,
        Layout.SHARD,
        Layout.REPLICATE,
    )
    assert (fc2.style, fc2.input, fc2.output) == (SplitStyle.ROWWISE, Layout.SHARD, Layout.REPLICATE)
    assert fc1.shape == (8192, 1024) and fc2.shape == (1024, 8192)
    assert paired.edge_seconds == 0.0
    gathered = evaluate(space, _choose(space, {"fc1": SplitStyle.COLWISE}), model)
    assert gathered.edge_seconds > 0  # fc2 replicated: the colwise output is all-gathered


def test_a_replicated_activation_between_colwise_and_rowwise_means_all_gather() -> None:
    graph = mlp(relu_module=True)
    space = executable_space(graph, procs=4, tensor_parallel=2)
    assert space is not None
    strategy = evaluate(
        space,
        _choose(space, {"fc1": SplitStyle.COLWISE, "fc2": SplitStyle.ROWWISE}),  # relu: replicated
        _uniform(4, 2, group_size=2),
    )
    fc1, fc2 = module_splits(space, strategy)
    assert fc1.output == Layout.REPLICATE and fc2.input == Layout.REPLICATE
    assert 0 < strategy.edge_seconds < float("inf")


def test_colwise_needs_a_single_consumer() -> None:
    g = GraphBuilder(name="fork", min_split_size=1)
    x = g.fc(None, (8, 64), 64, name="fc", module="fc")
    y = g.elementwise([x, x], g.shape(x), name="add")
    g.softmax_xent(y, g.shape(y), name="loss")
    space = executable_space(g.build(), procs=4, tensor_parallel=2)
    assert space is not None
    assert [list(r) for r in space.layers[0].configs] == [[2, 1, 1], [2, 1, 2]]  # replicated, rowwise


# --- plan_job -----------------------------------------------------------------------------------------


def test_wide_mlp_runs_tensor_parallel_inside_pods() -> None:
    graph = mlp()
    plan = plan_job(graph=graph, nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=16)
    assert plan.executed == Executed.HYBRID and plan.tensor_parallel == 2
    assert plan.search_space == "executable"
    assert [(s.module, s.style, s.input, s.output) for s in plan.splits] == [
        ("net.fc1", SplitStyle.COLWISE, Layout.REPLICATE, Layout.SHARD),
        ("net.fc2", SplitStyle.ROWWISE, Layout.SHARD, Layout.REPLICATE),
    ]
    candidates, _ = executable_candidates(graph, devices(4, 2), CATALOG, 2)
    by_t = {c.tensor_parallel: c for c in candidates}
    assert plan.predicted_step_s is not None
    assert plan.predicted_step_s == pytest.approx(by_t[2].strategy.total_seconds)
    assert plan.predicted_step_s <= by_t[1].strategy.total_seconds  # data parallel's prediction
    assert plan.baseline_step_s is not None and plan.predicted_step_s < plan.baseline_step_s
    assert (
        plan.strategy
        == "hybrid: tensor parallel 2 in each pod (fc1 colwise, fc2 rowwise), data parallel x2 across"
    )
    assert plan.summary.startswith("hybrid TP2 x DP2") and len(plan.summary) <= 60
    assert "hybrid" in plan.reason and "TP1" in plan.reason
    assert [row["kind"] for row in plan.layers] == ["colwise", "rowwise", "replicated"]
    assert plan.predicted_memory_bytes_per_gpu is not None
    assert 0 < plan.predicted_memory_bytes_per_gpu < 80 * 2**30
    assert sharding_map(plan)["tensorParallel"] == 2
    assert set(sharding_map(plan)["modules"]) == {"net.fc1", "net.fc2"}  # type: ignore[call-overload]


def test_small_weights_big_batch_cnn_stays_data_parallel() -> None:
    plan = plan_job(graph=small_cnn(), nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=256)
    assert plan.executed == Executed.DATA_PARALLEL and plan.tensor_parallel == 1 and not plan.splits
    assert plan.strategy.startswith("data-parallel x4")
    assert all(row["kind"] == "data" for row in plan.layers)
    assert plan.predicted_step_s is not None and plan.baseline_step_s is not None
    assert plan.predicted_step_s <= plan.baseline_step_s


def test_layers_without_modules_only_replicate_so_data_parallel_wins() -> None:
    plan = plan_job(graph=mlp(modules=False), nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=16)
    assert plan.executed == Executed.DATA_PARALLEL and plan.tensor_parallel == 1
    assert "TP2: no layer gains from a tensor split" in plan.reason


def test_batch_below_the_gpu_count_needs_tensor_parallel() -> None:
    plan = plan_job(graph=mlp(batch=2), nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=2)
    assert plan.executed == Executed.HYBRID and plan.baseline_step_s is None
    with pytest.raises(PlacementError, match="global batch 2 < 4 data-parallel groups"):
        plan_job(
            graph=mlp(batch=2, modules=False), nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=2
        )


def test_no_graph_is_data_parallel() -> None:
    plan = plan_job(graph=None, nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=16)
    assert plan.executed == Executed.DATA_PARALLEL and plan.tensor_parallel == 1 and not plan.splits


def test_hybrid_plan_round_trips_through_the_control_configmap_form() -> None:
    plan = plan_job(graph=mlp(), nodes=pods(2, 2), workers=2, gpus_per_worker=2, global_batch=16)
    assert plan_from_json(plan_to_json(plan)) == plan


# --- module names -----------------------------------------------------------------------------------


def test_module_round_trips_and_is_validated() -> None:
    graph = mlp()
    assert graph_from_dict(graph_to_dict(graph)) == graph
    assert graph_to_dict(graph)["layers"][0]["module"] == "net.fc1"
    doc = graph_to_dict(graph)
    doc["layers"][1]["module"] = "net.fc1"
    with pytest.raises(GraphError, match="also the module of layer 'fc1'"):
        graph_from_dict(doc)
    doc["layers"][1]["module"] = "net..fc-2"
    with pytest.raises(GraphError, match="not a qualified module name"):
        graph_from_dict(doc)
    doc["layers"][1]["module"] = "layers.0.fc"  # indices are parts too (nn.Sequential)
    assert graph_from_dict(doc).layer("fc2").module == "layers.0.fc"


def test_presets_name_their_weight_layers() -> None:
    assert [layer.module for layer in preset("alexnet").layers if layer.module] == ["fc6", "fc7", "fc8"]
    assert {layer.module for layer in preset("rnnlm").layers} == {"", "embedding", "fc"}
    assert preset("transformer").layer("enc0_ff1").module == "enc0_ff1"


def test_fx_trace_records_module_names() -> None:
    torch = pytest.importorskip("torch")
    from paceline.planner.fx_trace import trace_module

    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    graph = trace_module(model, (4, 32))
    assert {layer.name: layer.module for layer in graph.layers if layer.module} == {"_0": "0", "_2": "2"}
    assert graph_from_dict(graph_to_dict(graph)) == graph
