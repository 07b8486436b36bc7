"""Cost models: turn PaSE's per-device terms into seconds for a set of devices.

* `PaseCostModel`: PaSE's published cost function for p identical devices: cost = FLOPs + r * words with
  r = peak FLOP/s / bandwidth (in words), reported here in seconds (cost / peak FLOP/s). Defaults are
  PaSE's: 10 TFLOP/s, 16 GB/s, 8-byte words (its code divides GB/s by 8).
* `HeteroCostModel`: each device has its own speed, memory and links. A configuration that splits the
  batch b ways and the other dims m ways runs on the n = b*m fastest devices, formed into b model-parallel
  groups of m consecutive devices (same type where counts allow; a group runs at its slowest member).
  With proportional shares each group gets batch in proportion to its speed, so compute time is
  FLOPs / aggregate speed; with equal shares (PaSE's execution) every group waits for the slowest.
  Collectives inside groups use intra-node links when each group sits in one node, batch collectives
  and layout transitions use intra-node links only when all their devices share one node.
  With `group_size` = t > 0 (the executable space: t-way tensor-parallel groups), every configuration
  with batch split b runs on b groups of t devices whatever its other splits: a layer split only on the
  batch is computed t times over (replicated in its group), and layout transitions stay inside groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from paceline.planner.devices import GIB, DeviceCatalog, DeviceType
from paceline.planner.layer_terms import LayerTerms

Array = np.ndarray


class CostModel(Protocol):
    """What the search needs from a cost model (all arrays are per configuration / per layout pair)."""

    @property
    def procs(self) -> int: ...

    def layer_seconds(self, terms: LayerTerms) -> Array: ...

    def edge_seconds(self, words: Array, devices: Array) -> Array: ...

    def memory_fraction(self, terms: LayerTerms) -> Array | None: ...

    def device_bytes(self, terms: LayerTerms, index: int) -> Array | None: ...


@dataclass(frozen=True, kw_only=True)
class PaseCostModel:
    """PaSE's homogeneous cost function (seconds = PaSE cost / peak FLOP/s)."""

    procs: int
    tflops: float = 10.0
    gbps: float = 16.0
    word_bytes: float = 8.0

    @property
    def r(self) -> float:
        """FLOPs that take as long as moving one word."""
        return self.tflops * 1e12 / (self.gbps * 1e9 / self.word_bytes)

    def layer_seconds(self, terms: LayerTerms) -> Array:
        cost = terms.comp + self.r * (terms.words_model + terms.words_batch)
        return np.asarray(cost / (self.tflops * 1e12))

    def edge_seconds(self, words: Array, devices: Array) -> Array:
        return np.asarray(self.r * words / (self.tflops * 1e12))

    def memory_fraction(self, terms: LayerTerms) -> Array | None:
        return None

    def device_bytes(self, terms: LayerTerms, index: int) -> Array | None:
        return None


@dataclass(frozen=True, kw_only=True)
class Device:
    """One GPU as the cost model sees it."""

    node: str
    type: DeviceType


def order_devices(devices: Sequence[Device]) -> tuple[Device, ...]:
    """Fastest type first; a node's GPUs stay together (larger nodes first within a type)."""
    per_node: dict[str, int] = {}
    for d in devices:
        per_node[d.node] = per_node.get(d.node, 0) + 1
    return tuple(sorted(devices, key=lambda d: (-d.type.peak_flops, -per_node[d.node], d.node)))


@dataclass(frozen=True, kw_only=True)
class HeteroCostModel:
    """Per-device speeds, memory and links; see the module docstring."""

    devices: tuple[Device, ...]
    catalog: DeviceCatalog = field(default_factory=DeviceCatalog)
    proportional: bool = True  # batch shares proportional to speed (Paceline) or equal (PaSE execution)
    word_bytes: float = 4.0  # fp32 activations and gradients
    bytes_per_param: float = 16.0  # fp32 weight + gradient + two Adam moments
    bytes_per_activation: float = 4.0
    group_size: int = 0  # > 0: b-way batch splits run on b groups of this many devices (see module doc)
    _agg: Array = field(init=False, repr=False)
    _bw_group: Array = field(init=False, repr=False)
    _bw_all: Array = field(init=False, repr=False)
    _share: Array = field(init=False, repr=False)
    _cap: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p = len(self.devices)
        if p == 0:
            raise ValueError("HeteroCostModel needs at least one device")
        if self.group_size < 0 or (self.group_size and p % self.group_size):
            raise ValueError(f"group_size {self.group_size} must be 0 or divide the {p} devices")
        eff = self.catalog.compute_efficiency
        speeds = np.asarray([d.type.peak_flops * eff for d in self.devices], dtype=np.float64)
        intra = (
            np.asarray([d.type.intra_node_gbps * 1e9 for d in self.devices]) * self.catalog.link_efficiency
        )
        inter = (
            np.asarray([d.type.inter_node_gbps * 1e9 for d in self.devices]) * self.catalog.link_efficiency
        )
        nodes = [d.node for d in self.devices]
        agg = np.full((p + 1, p + 1), np.nan)
        bw_group = np.full((p + 1, p + 1), np.nan)
        share = np.zeros((p + 1, p + 1, p))
        bw_all = np.full(p + 1, np.nan)
        for n in range(1, p + 1):
            one_node = len(set(nodes[:n])) == 1
            bw_all[n] = intra[:n].min() if one_node else inter[:n].min()
            for m in range(1, n + 1):
                if n % m:
                    continue
                b = n // m
                mins = speeds[:n].reshape(b, m).min(axis=1)
                group_speed = np.repeat(mins, m)
                if self.proportional:
                    agg[b, m] = float(mins.sum() * m)
                    share[b, m, :n] = n * group_speed / agg[b, m]
                else:
                    agg[b, m] = float(n * mins.min())
                    share[b, m, :n] = 1.0
                grouped = all(len(set(nodes[g * m : (g + 1) * m])) == 1 for g in range(b))
                bw_group[b, m] = intra[:n].min() if grouped else inter[:n].min()
        object.__setattr__(self, "_agg", agg)
        object.__setattr__(self, "_bw_group", bw_group)
        object.__setattr__(self, "_bw_all", bw_all)
        object.__setattr__(self, "_share", share)
        object.__setattr__(self, "_cap", np.asarray([d.type.memory_gib * GIB for d in self.devices]))

    @property
    def procs(self) -> int:
        return len(self.devices)

    def groups(self, terms: LayerTerms) -> tuple[Array, Array]:
        """Per configuration: how many groups it runs on and how many devices each group has."""
        b = terms.batch_split
        if self.group_size:
            return b, np.full_like(b, self.group_size)
        return b, terms.model_split

    def layer_seconds(self, terms: LayerTerms) -> Array:
        b, m = self.groups(terms)
        n = b * m
        compute = terms.comp * n / self._agg[b, m]
        comm = terms.words_model * self.word_bytes / self._bw_group[b, m]
        comm = comm + terms.words_batch * self.word_bytes / self._bw_all[n]
        return np.asarray(compute + comm)

    def edge_seconds(self, words: Array, devices: Array) -> Array:
        if self.group_size:  # every layout splits the batch alike: data moves only inside groups
            g = self.group_size
            return np.asarray(words * self.word_bytes / self._bw_group[self.procs // g, g])
        return np.asarray(words * self.word_bytes / self._bw_all[devices.astype(np.int64)])

    def _bytes(self, terms: LayerTerms) -> Array:
        """Bytes per device (configs x devices); devices a configuration does not use hold nothing."""
        b, m = self.groups(terms)
        share = self._share[b, m]  # configs x devices, zero where unused
        used = share > 0
        weights = (terms.weights * self.bytes_per_param)[:, None] * used
        acts = (terms.activations * self.bytes_per_activation)[:, None] * share
        return np.asarray(weights + acts)

    def memory_fraction(self, terms: LayerTerms) -> Array | None:
        return np.asarray((self._bytes(terms) / self._cap).max(axis=1))

    def device_bytes(self, terms: LayerTerms, index: int) -> Array | None:
        b, m = (a[index : index + 1] for a in self.groups(terms))
        share = self._share[b, m][0]
        weights = terms.weights[index] * self.bytes_per_param * (share > 0)
        return np.asarray(weights + terms.activations[index] * self.bytes_per_activation * share)

    @property
    def capacity_bytes(self) -> Array:
        return self._cap


def weakest_device_model(devices: Sequence[Device], catalog: DeviceCatalog) -> HeteroCostModel:
    """PaSE's view of mixed hardware: every device is taken to be the weakest one, shares are equal."""
    types = [d.type for d in devices]
    weakest = DeviceType(
        product="weakest",
        short="weakest",
        peak_tflops=min(t.peak_tflops for t in types),
        memory_gib=min(t.memory_gib for t in types),
        intra_node_gbps=min(t.intra_node_gbps for t in types),
        inter_node_gbps=min(t.inter_node_gbps for t in types),
    )
    same = tuple(Device(node=d.node, type=weakest) for d in devices)
    return HeteroCostModel(devices=same, catalog=catalog, proportional=False)
