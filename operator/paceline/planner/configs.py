"""Parallelization configurations of a layer: how many ways each iteration-space dim is split.

PaSE's rule: a dim of size d may be split e ways when e divides d and d / e >= the minimum split size
(4 for the CNNs, 1 for RNNLM and Transformer); dims marked fixed stay unsplit; the product of all splits
is at most p (a layer may use fewer devices than there are).
"""

from __future__ import annotations

import numpy as np

from paceline.planner.graph import Layer, parse_axis


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
