"""GPU catalog keyed by the node label `nvidia.com/gpu.product`, overridable from YAML.

Numbers are vendor peak figures (dense BF16/FP16 tensor FLOP/s, memory, one-direction link bandwidth)
rounded; they set the *ratios* between GPU types. Measured relative speeds replace the FLOP/s ratios.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from paceline.planner.graph import GraphError

GIB = 1024**3
GB = 1e9


@dataclass(frozen=True, kw_only=True)
class DeviceType:
    """One GPU model."""

    product: str  # `nvidia.com/gpu.product` label value
    short: str  # short alias used by the CLI (`h100`)
    peak_tflops: float  # dense BF16/FP16 tensor-core peak
    memory_gib: float
    intra_node_gbps: float  # GB/s per GPU to a peer in the same node (NVLink or PCIe), one direction
    inter_node_gbps: float  # GB/s per GPU to another node (NIC share), one direction

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops * 1e12


_DEFAULT_TYPES = (
    DeviceType(
        product="NVIDIA-H200",
        short="h200",
        peak_tflops=989,
        memory_gib=141,
        intra_node_gbps=450,
        inter_node_gbps=50,
    ),
    DeviceType(
        product="NVIDIA-H100-80GB-HBM3",
        short="h100",
        peak_tflops=989,
        memory_gib=80,
        intra_node_gbps=450,
        inter_node_gbps=50,
    ),
    DeviceType(
        product="NVIDIA-A100-SXM4-80GB",
        short="a100",
        peak_tflops=312,
        memory_gib=80,
        intra_node_gbps=300,
        inter_node_gbps=25,
    ),
    DeviceType(
        product="NVIDIA-A100-SXM4-40GB",
        short="a100-40gb",
        peak_tflops=312,
        memory_gib=40,
        intra_node_gbps=300,
        inter_node_gbps=25,
    ),
    DeviceType(
        product="NVIDIA-A100-PCIE-40GB",
        short="a100-pcie",
        peak_tflops=312,
        memory_gib=40,
        intra_node_gbps=32,
        inter_node_gbps=12.5,
    ),
    DeviceType(
        product="NVIDIA-L40S",
        short="l40s",
        peak_tflops=362,
        memory_gib=48,
        intra_node_gbps=32,
        inter_node_gbps=12.5,
    ),
    DeviceType(
        product="NVIDIA-A10G",
        short="a10g",
        peak_tflops=70,
        memory_gib=24,
        intra_node_gbps=16,
        inter_node_gbps=12.5,
    ),
    DeviceType(
        product="NVIDIA-L4",
        short="l4",
        peak_tflops=121,
        memory_gib=24,
        intra_node_gbps=32,
        inter_node_gbps=12.5,
    ),
    DeviceType(
        product="Tesla-V100-SXM2-16GB",
        short="v100",
        peak_tflops=125,
        memory_gib=16,
        intra_node_gbps=150,
        inter_node_gbps=12.5,
    ),
    DeviceType(
        product="Tesla-T4",
        short="t4",
        peak_tflops=65,
        memory_gib=16,
        intra_node_gbps=12,
        inter_node_gbps=6.25,
    ),
)


@dataclass(frozen=True, kw_only=True)
class DeviceCatalog:
    """Known GPU types plus the efficiency factors that turn peaks into expected rates."""

    types: Mapping[str, DeviceType] = field(default_factory=lambda: {t.product: t for t in _DEFAULT_TYPES})
    compute_efficiency: float = 0.4  # achieved fraction of peak FLOP/s in training
    link_efficiency: float = 0.8  # achieved fraction of link bandwidth in collectives
    fallback: str = "Tesla-T4"  # assumed for GPU products the catalog does not know

    def lookup(self, name: str) -> DeviceType:
        """By product label or short alias (case-insensitive); unknown products fall back to `fallback`."""
        found = self.find(name)
        if found is not None:
            return found
        return replace(self.types[self.fallback], product=name, short=name.lower())

    def find(self, name: str) -> DeviceType | None:
        if name in self.types:
            return self.types[name]
        lowered = name.lower()
        for t in self.types.values():
            if lowered in (t.short, t.product.lower()):
                return t
        return None

    def with_overrides(self, doc: Mapping[str, Any]) -> DeviceCatalog:
        """Apply a YAML document: `{devices: [{product, short, peakTflops, memoryGib, intraNodeGbps,
        interNodeGbps}], computeEfficiency, linkEfficiency}`; entries replace or extend the catalog."""
        types = dict(self.types)
        keys = {
            "peakTflops": "peak_tflops",
            "memoryGib": "memory_gib",
            "intraNodeGbps": "intra_node_gbps",
            "interNodeGbps": "inter_node_gbps",
            "short": "short",
        }
        for pos, entry in enumerate(doc.get("devices") or []):
            if not isinstance(entry, Mapping) or "product" not in entry:
                raise GraphError(
                    f"device catalog entry #{pos}: needs `product` (the nvidia.com/gpu.product value)"
                )
            product = str(entry["product"])
            unknown = set(entry) - set(keys) - {"product"}
            if unknown:
                raise GraphError(f"device catalog entry {product!r}: unknown key(s) {sorted(unknown)}")
            base = types.get(product)
            numbers = {keys[k]: float(v) for k, v in entry.items() if k in keys and k != "short"}
            short = str(entry.get("short", base.short if base else product.lower()))
            if base is None:
                missing = {"peakTflops", "memoryGib", "intraNodeGbps", "interNodeGbps"} - set(entry)
                if missing:
                    raise GraphError(f"device catalog entry {product!r}: new products need {sorted(missing)}")
                types[product] = DeviceType(
                    product=product,
                    short=short,
                    peak_tflops=numbers["peak_tflops"],
                    memory_gib=numbers["memory_gib"],
                    intra_node_gbps=numbers["intra_node_gbps"],
                    inter_node_gbps=numbers["inter_node_gbps"],
                )
            else:
                types[product] = DeviceType(
                    product=product,
                    short=short,
                    peak_tflops=numbers.get("peak_tflops", base.peak_tflops),
                    memory_gib=numbers.get("memory_gib", base.memory_gib),
                    intra_node_gbps=numbers.get("intra_node_gbps", base.intra_node_gbps),
                    inter_node_gbps=numbers.get("inter_node_gbps", base.inter_node_gbps),
                )
        return replace(
            self,
            types=types,
            compute_efficiency=float(doc.get("computeEfficiency", self.compute_efficiency)),
            link_efficiency=float(doc.get("linkEfficiency", self.link_efficiency)),
        )


def load_catalog(path: str | Path | None = None) -> DeviceCatalog:
    """The built-in catalog, with overrides from a YAML file when given."""
    catalog = DeviceCatalog()
    if path is None:
        return catalog
    doc = yaml.safe_load(Path(path).read_text()) or {}
    return catalog.with_overrides(doc)
