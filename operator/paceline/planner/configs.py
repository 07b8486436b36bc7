"""Parallelization configurations of a layer: how many ways each iteration-space dim is split.

PaSE's rule: a dim of size d may be split e ways when e divides d and d / e >= the minimum split size
(4 for the CNNs, 1 for RNNLM and Transformer); dims marked fixed stay unsplit; the product of all splits
is at most p (a layer may use fewer devices than there are).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from paceline.planner.graph import Layer, OpKind, parse_axis

ConfigFn = Callable[[Layer], np.ndarray]  # a layer's configurations (configs x dims)


def split_options(size: int, *, min_split_size: int, procs: int) -> list[int]:
    """Allowed split factors of one dim (always contains 1)."""
    options = [e for e in range(1, min(size, procs) + 1) if size % e == 0 and size // e >= min_split_size]
    return options or [1]


def layer_configs(layer: Layer, *, procs: int, min_split_size: int) -> np.ndarray:
    """All configurations of `layer` as an int array (configs x dims)."""
    rule = layer.min_split_size if layer.min_split_size is not None else min_split_size
    fixed = set(layer.fixed)
    configs = np.ones((1, 0), dtype=np.int64)
    products = np.ones(1, dtype=np.int64)
    for name, size in layer.dims:
        opts = [1] if name in fixed else split_options(size, min_split_size=rule, procs=procs)
        opt = np.asarray(opts, dtype=np.int64)
        prod = (products[:, None] * opt[None, :]).ravel()
        keep = prod <= procs
        rows = np.repeat(configs, len(opt), axis=0)
        col = np.tile(opt, len(configs))
        configs = np.concatenate([rows, col[:, None]], axis=1)[keep]
        products = prod[keep]
    if layer.contiguous:
        configs = configs[[_is_contiguous(row, layer.dim_sizes) for row in configs]]
    return configs


@dataclass(frozen=True, kw_only=True)
class ModuleDims:
    """How a module layer maps onto a torch module: the dims a tensor-parallel split cuts."""

    kind: str  # "linear" | "embedding"
    out_dim: str  # gemm.n: Linear out_features / Embedding dim (colwise splits it)
    in_dim: str  # gemm.k: Linear in_features / Embedding vocabulary (rowwise splits it)


def module_dims(layer: Layer) -> ModuleDims | None:
    """The split dims of a layer that a Linear or Embedding computes; None if it cannot be tensor-split.

    Needed: a `module`, a GEMM with one n and one k dim, a 2-D weight over exactly those, the output's last
    axis n and (linear) the data input's last axis k. An embedding is the one-hot x table einsum of
    `GraphBuilder.embedding`: both operands are graph inputs and the weight is laid out (k, n).
    """
    if not layer.module:
        return None
    return gemm_dims(layer)


def gemm_dims(layer: Layer) -> ModuleDims | None:
    """`module_dims` without the `module` requirement: the shape of a Linear or Embedding layer."""
    g = layer.gemm
    if layer.op != OpKind.GEMM or g is None or g.batch:
        return None
    if len(g.n) != 1 or len(g.k) != 1 or set(layer.weights) != {g.n[0], g.k[0]} or len(layer.weights) != 2:
        return None
    n, k = g.n[0], g.k[0]
    if not layer.output or layer.output[-1] != n or not layer.inputs:
        return None
    if len(layer.inputs) == 2 and all(t.source is None for t in layer.inputs) and layer.weights == (k, n):
        return ModuleDims(kind="embedding", out_dim=n, in_dim=k)
    if layer.inputs[0].axes[-1:] != (k,):
        return None
    return ModuleDims(kind="linear", out_dim=n, in_dim=k)


def feature_dim(layer: Layer, *, batch_dim: str) -> str | None:
    """The last (feature) dim of an elementwise layer that can pass a colwise shard through; else None.

    Needed: op elementwise, exactly one input, produced by a layer, read with the output's own axes
    (plain dim names), a batch dim, and a last dim that is not the batch dim and not `fixed` (the fx
    tracer fixes it when the op broadcasts a hidden operand over the features, e.g. `x + self.bias`).
    """
    if layer.op != OpKind.ELEMENTWISE or len(layer.inputs) != 1 or layer.inputs[0].source is None:
        return None
    names = layer.dim_names
    if layer.inputs[0].axes != layer.output or not layer.output or batch_dim not in names:
        return None
    if any(len(parse_axis(a)) != 1 for a in layer.output):
        return None
    last = layer.output[-1]
    if last == batch_dim or last in layer.fixed:
        return None
    return last


def executable_configs(
    layer: Layer,
    *,
    batch_dim: str,
    data_groups: int,
    tensor_parallel: int,
    colwise: bool = True,
    feature: bool = False,
) -> np.ndarray:
    """The configurations the worker runtime can run for `layer` (configs x dims).

    Always replicated (batch split `data_groups` ways, nothing else split); with `tensor_parallel` > 1
    and a Linear/Embedding module also rowwise (k split t ways) and, if `colwise`, colwise (n split t
    ways); with t > 1 and `feature`, an elementwise layer (`feature_dim`) may also be feature-split
    (its last dim split t ways: it runs on a colwise shard). A split needs t to divide the dim. A layer
    without the batch dim is replicated unsplit. Raises ValueError when the batch dim is smaller than
    `data_groups`.
    """
    names = layer.dim_names
    base = np.ones(len(names), dtype=np.int64)
    if batch_dim in names:
        batch = layer.dim_sizes[names.index(batch_dim)]
        if batch < data_groups:
            raise ValueError(f"layer {layer.name!r}: batch {batch} < {data_groups} data-parallel groups")
        base[names.index(batch_dim)] = data_groups
    wanted: list[str] = []
    if tensor_parallel > 1:
        dims = module_dims(layer)
        if dims is not None:
            wanted = ([dims.out_dim] if colwise else []) + [dims.in_dim]
        last = feature_dim(layer, batch_dim=batch_dim) if feature else None
        if last is not None:
            wanted = [last]
    rows = [base]
    for dim in wanted:
        if layer.dim_sizes[names.index(dim)] % tensor_parallel == 0:
            row = base.copy()
            row[names.index(dim)] = tensor_parallel
            rows.append(row)
    return np.stack(rows)


def _is_contiguous(config: np.ndarray, sizes: tuple[int, ...]) -> bool:
    """Leading dims fully split, then at most one partially split dim, then unsplit (PaSE's reshape rule)."""
    i = 0
    while i < len(sizes) and config[i] == sizes[i]:
        i += 1
    return bool(np.all(config[i + 1 :] == 1))


def axis_splits(layer: Layer, configs: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
    """Split factor of each tensor axis under each configuration (configs x axes)."""
    col = {name: i for i, name in enumerate(layer.dim_names)}
    out = np.ones((len(configs), len(axes)), dtype=np.int64)
    for j, expr in enumerate(axes):
        for d in parse_axis(expr):
            out[:, j] *= configs[:, col[d]]
    return out


def keys_of(splits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of `splits` and, for each config, the index of its row (the config's layout key)."""
    rows, inverse = np.unique(splits, axis=0, return_inverse=True)
    return rows, inverse.reshape(-1)
