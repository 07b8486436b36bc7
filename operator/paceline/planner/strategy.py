"""From a layer graph and a cost model to the best per-layer strategy (and to baseline strategies)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from paceline.planner.configs import ConfigFn, axis_splits, keys_of, layer_configs
from paceline.planner.cost_models import CostModel
from paceline.planner.graph import Layer, LayerGraph, parse_axis
from paceline.planner.layer_terms import LayerTerms, edge_words, layer_terms
from paceline.planner.search import MinSumProblem, PairCost, solve

Array = np.ndarray


class DoesNotFit(RuntimeError):
    """No strategy keeps every device within its memory."""


@dataclass(frozen=True, kw_only=True)
class LayerSpace:
    """All configurations of one layer and their terms."""

    configs: Array
    terms: LayerTerms
    out_keys: Array  # configuration -> output layout key
    in_keys: tuple[Array | None, ...]  # per input: configuration -> input layout key (None: graph input)


@dataclass(frozen=True, kw_only=True)
class EdgeSpace:
    src: int
    dst: int
    position: int  # which input of dst
    words: Array  # (src output layouts x dst input layouts)
    devices: Array


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """Configurations and cost terms of a graph on p devices (independent of device types)."""

    graph: LayerGraph
    procs: int
    layers: tuple[LayerSpace, ...]
    edges: tuple[EdgeSpace, ...]


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """One configuration per layer and its predicted cost under a cost model."""

    graph: LayerGraph
    procs: int
    choice: tuple[int, ...]
    configs: tuple[tuple[int, ...], ...]
    layer_seconds: tuple[float, ...]
    edge_seconds: float
    total_seconds: float
    search_seconds: float = 0.0
    max_dependent: int = 0
    peak_memory_fraction: float | None = None  # most loaded device: bytes / capacity


def build_space(graph: LayerGraph, procs: int, *, configs_of: ConfigFn | None = None) -> SearchSpace:
    """Enumerate configurations, PaSE terms and edge transfer volumes for every layer and edge.

    `configs_of` gives each layer's configurations; default: PaSE's full space (`layer_configs`).
    """
    if procs < 1:
        raise ValueError("procs must be >= 1")
    if configs_of is None:

        def configs_of(layer: Layer) -> Array:
            return layer_configs(layer, procs=procs, min_split_size=graph.min_split_size)

    layers: list[LayerSpace] = []
    out_rows: list[Array] = []
    for layer in graph.layers:
        configs = configs_of(layer)
        shapes = [None if t.source is None else graph.layer(t.source).output_shape for t in layer.inputs]
        terms = layer_terms(layer, configs, batch_dim=graph.batch_dim, input_shapes=shapes)
        rows, out_keys = keys_of(axis_splits(layer, configs, layer.output))
        in_keys = tuple(
            None if t.source is None else keys_of(axis_splits(layer, configs, t.axes))[1]
            for t in layer.inputs
        )
        layers.append(LayerSpace(configs=configs, terms=terms, out_keys=out_keys, in_keys=in_keys))
        out_rows.append(rows)
    edges = []
    for src, dst, pos in graph.edges():
        layer = graph.layers[dst]
        tgt_rows, _ = keys_of(axis_splits(layer, layers[dst].configs, layer.inputs[pos].axes))
        shape = graph.layers[src].output_shape
        words, devices = edge_words(shape, out_rows[src].astype(np.float64), tgt_rows.astype(np.float64))
        edges.append(EdgeSpace(src=src, dst=dst, position=pos, words=words, devices=devices))
    return SearchSpace(graph=graph, procs=procs, layers=tuple(layers), edges=tuple(edges))


def _problem(space: SearchSpace, model: CostModel, penalty: float, respect_memory: bool) -> MinSumProblem:
    unary = []
    for ls in space.layers:
        cost = np.asarray(model.layer_seconds(ls.terms), dtype=np.float64)
        frac = model.memory_fraction(ls.terms) if respect_memory else None
        if frac is not None:
            cost = np.where(frac > 1.0, np.inf, cost + penalty * frac)
        unary.append(cost)
    pairs = []
    for e in space.edges:
        in_keys = space.layers[e.dst].in_keys[e.position]
        assert in_keys is not None
        table = np.asarray(model.edge_seconds(e.words, e.devices), dtype=np.float64)
        pairs.append(
            PairCost(a=e.src, b=e.dst, key_a=space.layers[e.src].out_keys, key_b=in_keys, table=table)
        )
    return MinSumProblem(unary=tuple(unary), pairs=tuple(pairs))


def evaluate(space: SearchSpace, choice: tuple[int, ...], model: CostModel) -> Strategy:
    """Cost of a given choice (configuration index per layer) under `model`."""
    per_layer = tuple(
        float(np.asarray(model.layer_seconds(ls.terms))[c])
        for ls, c in zip(space.layers, choice, strict=True)
    )
    edge_total = 0.0
    for e in space.edges:
        in_keys = space.layers[e.dst].in_keys[e.position]
        assert in_keys is not None
        i, j = space.layers[e.src].out_keys[choice[e.src]], in_keys[choice[e.dst]]
        edge_total += float(
            model.edge_seconds(e.words[i : i + 1, j : j + 1], e.devices[i : i + 1, j : j + 1])[0, 0]
        )
    return Strategy(
        graph=space.graph,
        procs=space.procs,
        choice=choice,
        configs=tuple(
            tuple(int(x) for x in ls.configs[c]) for ls, c in zip(space.layers, choice, strict=True)
        ),
        layer_seconds=per_layer,
        edge_seconds=edge_total,
        total_seconds=sum(per_layer) + edge_total,
        peak_memory_fraction=peak_memory_fraction(space, choice, model),
    )


def device_bytes(space: SearchSpace, choice: tuple[int, ...], model: CostModel) -> Array | None:
    """Bytes each device holds under `choice`, summed over all layers (None: the model has no memory)."""
    total: Array | None = None
    for ls, c in zip(space.layers, choice, strict=True):
        used = model.device_bytes(ls.terms, c)
        if used is None:
            return None
        total = used if total is None else total + used
    return total


def peak_memory_fraction(space: SearchSpace, choice: tuple[int, ...], model: CostModel) -> float | None:
    """Bytes on the most loaded device relative to its capacity, summed over all layers."""
    total = device_bytes(space, choice, model)
    capacity = getattr(model, "capacity_bytes", None)
    if total is None or capacity is None:
        return None
    return float((total / capacity).max())


def plan_strategy(space: SearchSpace, model: CostModel, *, respect_memory: bool = True) -> Strategy:
    """The minimum-cost strategy; with a memory-aware model, one that fits every device's memory.

    Configurations that alone overflow a device are excluded. If the cheapest strategy still overflows
    in sum, memory use is priced in (Lagrangian penalty, doubled until the strategy fits).
    """
    start = time.perf_counter()
    solution = solve(_problem(space, model, 0.0, respect_memory))
    if not np.isfinite(solution.cost):
        raise DoesNotFit("every configuration of some layer exceeds device memory")
    strategy = evaluate(space, solution.choice, model)
    penalty = strategy.total_seconds / max(len(space.layers), 1)
    attempts = 0
    while respect_memory and (strategy.peak_memory_fraction or 0.0) > 1.0:
        attempts += 1
        if attempts > 16:
            raise DoesNotFit(
                f"no strategy found that fits device memory (best uses {strategy.peak_memory_fraction:.0%})"
            )
        solution = solve(_problem(space, model, penalty, respect_memory))
        strategy = evaluate(space, solution.choice, model)
        penalty *= 2.0
    return _with_search(strategy, time.perf_counter() - start, solution.max_dependent)


def _with_search(s: Strategy, seconds: float, max_dependent: int) -> Strategy:
    from dataclasses import replace

    return replace(s, search_seconds=seconds, max_dependent=max_dependent)


def data_parallel_choice(space: SearchSpace) -> tuple[int, ...]:
    """Plain data parallelism: each layer splits only its batch dim, as many ways as its rules allow."""
    choice = []
    batch_dim = space.graph.batch_dim
    for layer, ls in zip(space.graph.layers, space.layers, strict=True):
        names = layer.dim_names
        others = [i for i, n in enumerate(names) if n != batch_dim]
        only_batch = np.all(ls.configs[:, others] == 1, axis=1) if others else np.ones(len(ls.configs), bool)
        batch = ls.configs[:, names.index(batch_dim)] if batch_dim in names else np.ones(len(ls.configs))
        score = np.where(only_batch, batch, -1)
        choice.append(int(np.argmax(score)))
    return tuple(choice)


def describe_config(space: SearchSpace, layer_index: int, config: tuple[int, ...]) -> str:
    """`b=32 n=4` style text (unsplit dims omitted; `-` when nothing is split)."""
    names = space.graph.layers[layer_index].dim_names
    parts = [f"{n}={c}" for n, c in zip(names, config, strict=True) if c > 1]
    return " ".join(parts) or "-"


def split_kind(space: SearchSpace, layer_index: int, config: tuple[int, ...]) -> str:
    """`data`, `model`, `hybrid` or `none` for one layer's configuration."""
    layer = space.graph.layers[layer_index]
    batch = {space.graph.batch_dim}
    split = {n for n, c in zip(layer.dim_names, config, strict=True) if c > 1}
    if not split:
        return "none"
    if split <= batch:
        return "data"
    if split & batch:
        return "hybrid"
    return "model"


__all__ = [
    "DoesNotFit",
    "SearchSpace",
    "Strategy",
    "build_space",
    "data_parallel_choice",
    "describe_config",
    "device_bytes",
    "evaluate",
    "parse_axis",
    "plan_strategy",
    "split_kind",
]
