"""PaSE's analytic per-layer and per-edge terms, vectorised over all configurations of a layer.

Every quantity is per device under an equal split (PaSE's view): FLOPs of computation and words sent in
collectives. The cost models turn these into seconds for a concrete set of devices. Collectives are
tagged *batch* when they reduce over the batch dim (gradient all-reduce of data parallelism), else *model*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from paceline.planner.graph import Layer, OpKind, parse_axis

Array = np.ndarray


@dataclass(frozen=True, kw_only=True)
class LayerTerms:
    """Per-configuration terms of one layer (all arrays have one entry per configuration)."""

    comp: Array  # FLOPs per device
    words_model: Array  # words per device in collectives among model-split devices
    words_batch: Array  # words per device in collectives over the batch dim
    batch_split: Array  # how many ways the batch dim is split
    model_split: Array  # product of all other splits (devices per model-parallel group)
    weights: Array  # parameters held per device
    activations: Array  # output activations held per device


def allreduce_words(words: Array, procs: Array) -> Array:
    """Words each device sends in a ring all-reduce of `words` among `procs` devices: 2 (q-1)/q * words."""
    q = np.asarray(procs, dtype=np.float64)
    return 2.0 * (q - 1.0) / q * words


def _prod(a: Array, cols: Sequence[int]) -> Array:
    if not cols:
        return np.ones(a.shape[0])
    return np.prod(a[:, list(cols)], axis=1)


def layer_terms(
    layer: Layer, configs: Array, *, batch_dim: str, input_shapes: Sequence[tuple[int, ...] | None]
) -> LayerTerms:
    """Compute the PaSE terms of `layer` for every row of `configs`."""
    names = layer.dim_names
    col = {n: i for i, n in enumerate(names)}
    sizes = np.asarray(layer.dim_sizes, dtype=np.float64)
    c = configs.astype(np.float64)
    pp = sizes / c
    elems = np.prod(pp, axis=1)
    k = len(configs)
    zero = np.zeros(k)
    comp, wm, wb = zero.copy(), zero.copy(), zero.copy()

    def add_words(words: Array, dims: Sequence[str]) -> None:
        nonlocal wm, wb
        if batch_dim in dims:
            wb = wb + words
        else:
            wm = wm + words

    op = layer.op
    if op == OpKind.GEMM:
        assert layer.gemm is not None
        roles = layer.gemm
        comp, terms = _gemm(
            pp,
            c,
            [col[d] for d in roles.batch],
            [col[d] for d in roles.m],
            [col[d] for d in roles.n],
            [col[d] for d in roles.k],
            layer.pointwise,
        )
        for words, dims in zip(terms, (roles.k, roles.n, roles.m), strict=True):
            add_words(words, dims)
    elif op == OpKind.LSTM:
        comp, words_lstm = _lstm(sizes, c)
        add_words(words_lstm[0], ("n",))
        add_words(words_lstm[1], ("k",))
        add_words(words_lstm[2], (names[1], names[2]))
        add_words(words_lstm[3], ("n",))
    elif op == OpKind.ELEMENTWISE:
        comp = (1.0 + layer.pointwise) * elems
    elif op == OpKind.POOL:
        comp = elems.copy()
        for t, shape in zip(layer.inputs, input_shapes, strict=True):
            if t.halo and shape is not None:
                add_words(_halo_words(layer, c, t.axes, t.halo, shape, col), ())
    elif op == OpKind.NORM:
        a = col[layer.axis[0]]
        others = [i for i in range(len(names)) if i != a]
        comp = 16.0 * elems
        add_words(4.0 * allreduce_words(elems / pp[:, a], c[:, a]), (names[a],))
        add_words(4.0 * allreduce_words(pp[:, a], _prod(c, others)), [names[i] for i in others])
    elif op == OpKind.SOFTMAX:
        a = col[layer.axis[0]]
        comp = 4.0 * elems + elems * sizes[a]
        rest = elems / pp[:, a]
        words = 2.0 * allreduce_words(rest, c[:, a]) + allreduce_words(rest * sizes[a], c[:, a])
        add_words(words, (names[a],))
    elif op == OpKind.SOFTMAX_XENT:
        rows = np.prod(pp[:, :-1], axis=1)
        comp = 4.0 * elems + 2.0 * rows
        add_words(np.where(c[:, -1] > 1, 2.0 * rows, 0.0), (names[-1],))
    elif op == OpKind.REDUCE:
        axes = [col[d] for d in layer.axis]
        add_words(allreduce_words(elems, _prod(c, axes)), layer.axis)
    # OpKind.LAYOUT: no compute, no communication.

    batch = configs[:, col[batch_dim]] if batch_dim in col else np.ones(k, dtype=np.int64)
    model = np.prod(configs, axis=1) // batch
    weights = zero
    if layer.weights:
        weights = layer.weight_scale * _prod(pp, [col[d] for d in layer.weights])
    out_splits = np.ones((k, len(layer.output)))
    for j, expr in enumerate(layer.output):
        for d in parse_axis(expr):
            out_splits[:, j] *= c[:, col[d]]
    activations = np.prod(np.asarray(layer.output_shape, dtype=np.float64) / out_splits, axis=1)
    return LayerTerms(
        comp=comp,
        words_model=wm,
        words_batch=wb,
        batch_split=batch.astype(np.int64),
        model_split=model.astype(np.int64),
        weights=weights,
        activations=activations,
    )


def gather_terms(terms: LayerTerms, layer: Layer, configs: Array, *, vocab_dim: str) -> LayerTerms:
    """An embedding as the worker runtime computes it, in place of PaSE's one-hot GEMM `terms`.

    An index gather (and its scatter-add backward) touches each output element, it does not multiply by
    a one-hot matrix (b*l*v*e FLOPs). Compute = output elements per device, counted like an elementwise
    layer's; a vocabulary (rowwise) split does not divide it (every rank looks up the whole output,
    masked to its rows) but adds an all-reduce of the output within the group; the ids need no input
    gradient. Weights, activations and the table-gradient all-reduce over the batch stay PaSE's.
    """
    out = terms.activations  # output elements per device
    vocab = configs[:, layer.dim_names.index(vocab_dim)]
    reduce = np.where(vocab > 1, allreduce_words(out, vocab), 0.0)
    return replace(terms, comp=out.copy(), words_model=reduce)


def _gemm(
    pp: Array, c: Array, batch: list[int], m: list[int], n: list[int], k: list[int], pointwise: int
) -> tuple[Array, tuple[Array, Array, Array]]:
    """PaSE's GEMM cost: 1 GEMM forward + 2 backward, and the three all-reduces (over k, n and m splits)."""
    bpp, mpp, npp, kpp = _prod(pp, batch), _prod(pp, m), _prod(pp, n), _prod(pp, k)
    comp = bpp * (3.0 * mpp * npp * kpp + 3.0 * pointwise * mpp * npp)
    over_k = bpp * allreduce_words(mpp * npp, _prod(c, k))  # forward partial sums
    over_n = bpp * allreduce_words(mpp * kpp, _prod(c, n))  # input gradient
    over_m = bpp * allreduce_words(npp * kpp, _prod(c, m))  # weight gradient
    return comp, (over_k, over_n, over_m)


def _lstm(sizes: Array, c: Array) -> tuple[Array, tuple[Array, Array, Array, Array]]:
    """PaSE's LSTM vertex, dims (l, s, b, n, k): a fused 4-gate GEMM + cell-to-cell relayout."""
    lay, seq, bat, nn, kk = (sizes[i] for i in range(5))
    cl, cs, cb, cn, ck = (c[:, i] for i in range(5))
    gemm_pp = np.stack([lay / cl, seq * bat / (cs * cb), 4.0 * nn / cn, 2.0 * kk / ck], axis=1)
    gemm_c = np.stack([cl, cs * cb, cn, ck], axis=1)
    comp, (over_k, over_n, over_m) = _gemm(gemm_pp, gemm_c, [0], [1], [2], [3], pointwise=3)
    held = np.stack([bat / cb, nn / cn], axis=1)
    needed = np.stack([bat / cb, kk / ck], axis=1)
    moved = area_needed(held, needed, cb * cn, cb * ck)
    relayout = lay * seq * moved
    return comp, (over_k, over_n, over_m, relayout)


def _halo_words(
    layer: Layer,
    c: Array,
    axes: tuple[str, ...],
    halo: tuple[int, ...],
    shape: tuple[int, ...],
    col: dict[str, int],
) -> Array:
    splits = np.ones((c.shape[0], len(axes)))
    for j, expr in enumerate(axes):
        for d in parse_axis(expr):
            splits[:, j] *= c[:, col[d]]
    inner = np.asarray(shape, dtype=np.float64) / splits
    outer = inner + np.asarray(halo, dtype=np.float64) * (splits > 1)
    return np.prod(outer, axis=1) - np.prod(inner, axis=1)


def area_needed(held: Array, needed: Array, held_procs: Array, needed_procs: Array) -> Array:
    """Elements a device needs but does not hold (PaSE: none held when the target uses more devices)."""
    overlap = np.prod(np.minimum(held, needed), axis=-1)
    overlap = np.where(needed_procs > held_procs, 0.0, overlap)
    return np.clip(np.prod(needed, axis=-1) - overlap, 0.0, None)


def edge_words(shape: tuple[int, ...], src_splits: Array, tgt_splits: Array) -> tuple[Array, Array]:
    """Words moved per device (forward + backward) for each (source layout, target layout) pair.

    Returns (words, devices) matrices of shape (source layouts, target layouts); `devices` is the larger
    of the two layouts' device counts (it decides which links carry the transfer).
    """
    t = np.asarray(shape, dtype=np.float64)
    held = (t / src_splits)[:, None, :]
    needed = (t / tgt_splits)[None, :, :]
    src_p = np.prod(src_splits, axis=1)[:, None]
    tgt_p = np.prod(tgt_splits, axis=1)[None, :]
    words = 2.0 * area_needed(held, needed, src_p, tgt_p)
    return words, np.maximum(src_p, tgt_p)
