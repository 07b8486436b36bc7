"""PaSE's search: GENERATESEQ vertex ordering and the DP over connected sets, with back-substitution.

The problem is generic: each vertex picks one of its configurations; the cost is a per-vertex term plus
pairwise terms on edges. Eliminating the vertices in GENERATESEQ order, each vertex's DP table is indexed
by the configurations of its dependent set D(i) and holds the best cost of its connected set X(i)
(recurrence (4) of the paper: the tables of the connected subsets S(i) are summed in). Tables are numpy
arrays. One refinement keeps them small: a pairwise term depends on a configuration only through the
layout of the tensor on that edge, so tables are indexed by the distinct layouts ("keys") of each
dependent vertex rather than by its full configuration; this is exact, not an approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Array = np.ndarray
_CHUNK_ELEMENTS = 1 << 20  # elements of the (config x dependent keys) block evaluated at once
_MAX_TABLE_ELEMENTS = 60_000_000
_MAX_DEPENDENTS = 24  # numpy arrays have at most 64 axes; a table over this many layers is unsearchable
_FLOAT32_ABOVE = 1 << 16  # larger combinations are summed in float32 (relative error ~1e-7, twice as fast)


class SearchTooLarge(RuntimeError):
    """The DP table of some vertex would not fit in memory (or in numpy's 64 axes)."""


@dataclass(frozen=True, kw_only=True)
class PairCost:
    """A pairwise term: `table[key_a[config_a], key_b[config_b]]`."""

    a: int
    b: int
    key_a: Array
    key_b: Array
    table: Array


@dataclass(frozen=True, kw_only=True)
class MinSumProblem:
    """Vertices with per-configuration costs (`inf` = forbidden) and pairwise terms."""

    unary: tuple[Array, ...]
    pairs: tuple[PairCost, ...]

    def cost_of(self, choice: tuple[int, ...] | list[int]) -> float:
        total = sum(float(u[c]) for u, c in zip(self.unary, choice, strict=True))
        for p in self.pairs:
            total += float(p.table[p.key_a[choice[p.a]], p.key_b[choice[p.b]]])
        return total


@dataclass(frozen=True, kw_only=True)
class Solution:
    choice: tuple[int, ...]  # configuration index per vertex
    cost: float
    order: tuple[int, ...]  # GENERATESEQ sequence
    max_dependent: int  # M: the largest dependent set
    largest_table: int  # entries of the largest DP table


@dataclass(kw_only=True)
class _Factor:
    vars: tuple[int, ...]
    keys: tuple[Array, ...]  # per var: configuration -> key index
    table: Array  # one axis per var, indexed by key


@dataclass(frozen=True, kw_only=True)
class _Record:
    """What back-substitution needs to pick `vertex`'s best configuration once its dependents are fixed."""

    vertex: int
    unary: Array
    dependents: tuple[int, ...]
    keys: tuple[Array, ...]  # joint key map per dependent
    factors: tuple[
        tuple[_Factor, tuple[Array | None, ...]], ...
    ]  # factor and, per var, joint key -> factor key

    def best_config(self, choice: list[int]) -> int:
        cost = self.unary.copy()
        for f, subs in self.factors:
            index: list[Array | int] = []
            for u, sub in zip(f.vars, subs, strict=True):
                if u == self.vertex:
                    index.append(f.keys[f.vars.index(u)])
                else:
                    assert sub is not None
                    index.append(int(sub[self.keys[self.dependents.index(u)][choice[u]]]))
            cost = cost + f.table[tuple(index)]
        return int(np.argmin(cost))


@dataclass(kw_only=True)
class _State:
    factors: dict[int, _Factor] = field(default_factory=dict)
    by_var: dict[int, set[int]] = field(default_factory=dict)
    next_id: int = 0

    def add(self, f: _Factor) -> None:
        fid = self.next_id
        self.next_id += 1
        self.factors[fid] = f
        for v in f.vars:
            self.by_var.setdefault(v, set()).add(fid)

    def take(self, v: int) -> list[_Factor]:
        out = []
        for fid in sorted(self.by_var.pop(v, set())):
            f = self.factors.pop(fid)
            for u in f.vars:
                if u != v:
                    self.by_var[u].discard(fid)
            out.append(f)
        return out


def generate_seq(neighbors: list[set[int]]) -> tuple[list[int], list[frozenset[int]]]:
    """GENERATESEQ (Fig. 3): repeatedly take the vertex with the smallest dependent set.

    Returns the sequence and each vertex's dependent set D(i) at the time it was sequenced.
    """
    d = [set(s) for s in neighbors]
    remaining = set(range(len(neighbors)))
    order: list[int] = []
    dependents: list[frozenset[int]] = []
    while remaining:
        u = min(remaining, key=lambda i: (len(d[i]), i))
        remaining.discard(u)
        order.append(u)
        dependents.append(frozenset(d[u]))
        for w in d[u]:
            d[w] = (d[w] | d[u]) - {w, u}
    return order, dependents


def solve(problem: MinSumProblem) -> Solution:
    """FINDBESTSTRATEGY: the exact minimum of the problem and a configuration per vertex attaining it."""
    n = len(problem.unary)
    neighbors: list[set[int]] = [set() for _ in range(n)]
    state = _State()
    for p in problem.pairs:
        if p.a == p.b:
            raise ValueError("a pairwise term needs two different vertices")
        neighbors[p.a].add(p.b)
        neighbors[p.b].add(p.a)
        state.add(_Factor(vars=(p.a, p.b), keys=(p.key_a, p.key_b), table=p.table))
    order, dependent_sets = generate_seq(neighbors)
    records: list[_Record] = []
    constant = 0.0
    largest = 1
    for v, dset in zip(order, dependent_sets, strict=True):
        record, table = _eliminate(v, np.asarray(problem.unary[v], dtype=np.float64), state.take(v))
        if set(record.dependents) != set(dset):
            raise AssertionError(
                f"dependent set mismatch at vertex {v}: {record.dependents} vs {sorted(dset)}"
            )
        largest = max(largest, table.size)
        if record.dependents:
            state.add(_Factor(vars=record.dependents, keys=record.keys, table=table))
        else:
            constant += float(table)
        records.append(record)
    choice = [0] * n
    for record in reversed(records):
        choice[record.vertex] = record.best_config(choice)
    return Solution(
        choice=tuple(choice),
        cost=constant,
        order=tuple(order),
        max_dependent=max((len(s) for s in dependent_sets), default=0),
        largest_table=largest,
    )


def _joint_keys(maps: list[Array]) -> tuple[Array, list[Array], int]:
    """Combine several key maps of one vertex into one; returns (joint map, per-map sub-maps, size)."""
    if len(maps) == 1 or all(m is maps[0] for m in maps):
        size = int(maps[0].max()) + 1
        ident = np.arange(size)
        return maps[0], [ident] * len(maps), size
    stacked = np.stack(maps, axis=1)
    _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, [m[first] for m in maps], len(first)


def stop_of(start: int, step: int, lead: int) -> int:
    return min(lead, start + step)


def _eliminate(v: int, unary: Array, factors: list[_Factor]) -> tuple[_Record, Array]:
    """Minimise out vertex v: returns its back-substitution record and the new table over its dependents.

    Factors over the same dependents are summed first in their small space; the combined block has the
    configurations of v on the last axis so the minimum is a contiguous reduction, done in chunks.
    """
    others = sorted({u for f in factors for u in f.vars if u != v})
    if len(others) > _MAX_DEPENDENTS:
        raise SearchTooLarge(
            f"vertex {v} depends on {len(others)} other layers at once (at most {_MAX_DEPENDENTS})"
        )
    joint: dict[int, Array] = {}
    subs: list[list[Array | None]] = [[None] * len(f.vars) for f in factors]
    sizes: list[int] = []
    for u in others:
        users = [(i, f.vars.index(u)) for i, f in enumerate(factors) if u in f.vars]
        jmap, sub_maps, size = _joint_keys([factors[i].keys[pos] for i, pos in users])
        joint[u] = jmap
        for (i, pos), sub in zip(users, sub_maps, strict=True):
            subs[i][pos] = sub
        sizes.append(size)
    table_size = math.prod(sizes)
    if table_size > _MAX_TABLE_ELEMENTS:
        raise SearchTooLarge(f"DP table of {table_size} entries at vertex {v} (dependents {others})")
    axis_of = {u: i for i, u in enumerate(others)}
    groups: dict[tuple[int, ...], Array] = {}
    for f, f_subs in zip(factors, subs, strict=True):
        index = [f.keys[pos] if u == v else f_subs[pos] for pos, u in enumerate(f.vars)]
        block = f.table[np.ix_(*index)]
        deps = tuple(sorted(axis_of[u] for u in f.vars if u != v))
        order = [f.vars.index(others[a]) for a in deps] + [f.vars.index(v)]
        block = block.transpose(order)
        groups[deps] = groups[deps] + block if deps in groups else block
    groups[()] = groups[()] + unary if () in groups else unary
    blocks = []
    for deps, block in groups.items():
        dims = [1] * len(others) + [len(unary)]
        for a, n in zip(deps, block.shape[:-1], strict=True):
            dims[a] = n
        blocks.append(block.reshape(dims))
    blocks.sort(key=lambda b: -b.size)
    if table_size * len(unary) > _FLOAT32_ABOVE:
        blocks = [b.astype(np.float32) for b in blocks]
    table = np.empty(sizes, dtype=blocks[0].dtype)
    lead = sizes[0] if sizes else 1
    step = max(1, _CHUNK_ELEMENTS // max(1, (table_size // lead) * len(unary)))
    for start in range(0, lead, step):
        part = [b[start : start + step] if sizes and b.shape[0] > 1 else b for b in blocks]
        shape = (stop_of(start, step, lead) - start, *sizes[1:], len(unary)) if sizes else (len(unary),)
        if len(part) == 1:
            acc = np.broadcast_to(part[0], shape)
        else:
            acc = np.add(part[0], part[1], out=np.empty(shape, dtype=part[0].dtype))
            for b in part[2:]:
                acc += b
        if sizes:
            np.min(acc, axis=-1, out=table[start : start + step])
        else:
            table = np.asarray(acc.min())
    table = table.astype(np.float64)
    record = _Record(
        vertex=v,
        unary=unary,
        dependents=tuple(others),
        keys=tuple(joint[u] for u in others),
        factors=tuple((f, tuple(sub)) for f, sub in zip(factors, subs, strict=True)),
    )
    return record, table
