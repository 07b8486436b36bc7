"""The local cluster's YAML: node pools and straggler schedules, parsed and turned into Node manifests."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

POOL_LABEL = "paceline.dev/pool"
SPEED_ANNOTATION = "paceline.dev/relative-speed"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NO_PROCESS_ANNOTATION = "paceline.dev/no-process"  # "true": the process runtime leaves the pod Running, idle
NODE_IP_BASE = ipaddress.IPv4Address("127.0.1.1")  # node i gets 127.0.1.(1+i)
MAX_NODES = 4096  # node IPs 127.0.1.1 + i, pod CIDRs 127.16.0.0/24 + i: all inside 127.0.0.0/8
POD_CIDR_BASE = ipaddress.IPv4Network("127.16.0.0/24")  # node i gets the i-th /24 after it: 127.16.i.0/24 …
# every fake node's capacity besides its GPUs
NODE_RESOURCES: dict[str, str] = {"cpu": "96", "memory": "1024Gi", "pods": "110", "ephemeral-storage": "1Ti"}
# On-demand USD per hour of the catalog's GPU instance types: the default `pricePerHour` of a pool
PRICE_PER_HOUR = {
    "p5.48xlarge": 98.32,  # 8 x H100
    "p4de.24xlarge": 40.97,  # 8 x A100 80GB
    "p4d.24xlarge": 32.77,  # 8 x A100 40GB
    "p3.8xlarge": 12.24,  # 4 x V100
    "g6e.12xlarge": 10.49,  # 4 x L40S
    "g5.12xlarge": 5.67,  # 4 x A10G
    "g6.12xlarge": 4.60,  # 4 x L4
    "g4dn.12xlarge": 3.91,  # 4 x T4
}


class ConfigError(ValueError):
    """The cluster YAML is invalid; the message names the field and what to fix."""


@dataclass(frozen=True, kw_only=True)
class Pool:
    """A node pool of one GPU type."""

    name: str
    gpu_product: str
    gpu_memory_mib: int
    instance_type: str
    nodes: int
    gpus_per_node: int
    relative_speed: float
    price_per_hour: float | None = None  # USD per node-hour: `pricePerHour`, else the catalog's, else unknown
    autoscale: Autoscale | None = None  # Karpenter adds nodes of this type on demand when set


@dataclass(frozen=True, kw_only=True)
class Autoscale:
    """A pool's node autoscaling (a Karpenter NodePool): how many nodes it may add, when empty ones go."""

    max_nodes: int  # nodes Karpenter may add on top of the pool's static ones
    consolidate_after: str  # how long a node it added stays empty before it goes (Karpenter duration)


@dataclass(frozen=True, kw_only=True)
class Straggler:
    """A slowdown applied by the process runtime to workers on a node or a whole pool."""

    node: str | None
    pool: str | None
    factor: float
    from_seconds: float
    until_seconds: float | None
    random_distribution: str | None  # "exponential" or "gamma"
    random_mean_s: float
    random_shape: float


@dataclass(frozen=True, kw_only=True)
class ControlPlane:
    """Settings a real cluster's operators tune for size (None: the components' defaults)."""

    client_qps: int | None = None  # kube-scheduler and kube-controller-manager API QPS (burst: twice that)
    kwok_parallelism: int | None = None  # kwok's pod and node stage workers
    node_lease_seconds: int = 40  # the fake kubelets' lease (renewed every quarter of it), like a kubelet's


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Everything the local cluster's YAML declares."""

    pools: tuple[Pool, ...]
    stragglers: tuple[Straggler, ...]
    control_plane: ControlPlane = ControlPlane()

    def node_names(self) -> list[str]:
        """Names of every node, pool by pool."""
        return [node_name(pool, i) for pool in self.pools for i in range(pool.nodes)]


def node_name(pool: Pool, index: int) -> str:
    """Name of the index-th node of a pool."""
    return f"gpu-{pool.name}-{index}"


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}.{key} is required")
    value = mapping[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be a {kind.__name__}, got {value!r}")
    return value


def parse_config(raw: Mapping[str, Any]) -> ClusterConfig:
    """Validate the cluster YAML's content."""
    pools_raw = raw.get("pools")
    if not isinstance(pools_raw, list) or not pools_raw:
        raise ConfigError("pools must be a non-empty list of node pools")
    pools: list[Pool] = []
    for i, item in enumerate(pools_raw):
        where = f"pools[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        pool = Pool(
            name=_require(item, "name", str, where),
            gpu_product=_require(item, "gpuProduct", str, where),
            gpu_memory_mib=_require(item, "gpuMemoryMiB", int, where),
            instance_type=_require(item, "instanceType", str, where),
            nodes=_require(item, "nodes", int, where),
            gpus_per_node=_require(item, "gpusPerNode", int, where),
            relative_speed=_require(item, "relativeSpeed", float, where),
            **_autoscaling_fields(item, where),
        )
        if pool.nodes < (0 if pool.autoscale else 1) or pool.gpus_per_node < 1:
            raise ConfigError(f"{where}: nodes (0 with autoscale) and gpusPerNode must be at least 1")
        if pool.relative_speed <= 0:
            raise ConfigError(f"{where}.relativeSpeed must be positive")
        pools.append(pool)
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ConfigError(f"pool names must be unique, got {names}")
    scaled = [p.instance_type for p in pools if p.autoscale]
    if len(set(scaled)) != len(scaled):
        raise ConfigError(f"autoscaled pools need distinct instanceTypes (Karpenter's catalog), got {scaled}")
    if sum(p.nodes for p in pools) > MAX_NODES:
        raise ConfigError(f"at most {MAX_NODES} nodes: node IPs and pod CIDRs must stay inside 127.0.0.0/8")
    config_nodes = {node_name(p, i) for p in pools for i in range(p.nodes)}
    stragglers: list[Straggler] = []
    for i, item in enumerate(raw.get("stragglers") or []):
        where = f"stragglers[{i}]"
        node, pool_name = item.get("node"), item.get("pool")
        if (node is None) == (pool_name is None):
            raise ConfigError(f"{where}: set exactly one of node or pool")
        if node is not None and node not in config_nodes:
            raise ConfigError(f"{where}.node {node!r} is not a node of this cluster ({sorted(config_nodes)})")
        if pool_name is not None and pool_name not in names:
            raise ConfigError(f"{where}.pool {pool_name!r} is not a pool of this cluster ({names})")
        random = item.get("randomDelay") or {}
        distribution = random.get("distribution")
        if distribution not in (None, "exponential", "gamma"):
            raise ConfigError(f"{where}.randomDelay.distribution must be exponential or gamma")
        factor = float(item.get("factor", 1.0))
        if factor < 1.0:
            raise ConfigError(f"{where}.factor must be ≥ 1 (how many times slower)")
        stragglers.append(
            Straggler(
                node=node,
                pool=pool_name,
                factor=factor,
                from_seconds=float(item.get("fromSeconds", 0)),
                until_seconds=float(item["untilSeconds"]) if "untilSeconds" in item else None,
                random_distribution=distribution,
                random_mean_s=float(random.get("meanMilliseconds", 0)) / 1000.0,
                random_shape=float(random.get("shape", 2.0)),
            )
        )
    return ClusterConfig(pools=tuple(pools), stragglers=tuple(stragglers), control_plane=_control_plane(raw))


def _control_plane(raw: Mapping[str, Any]) -> ControlPlane:
    block = raw.get("controlPlane") or {}
    values = {}
    fields = (
        ("clientQPS", "client_qps"),
        ("kwokParallelism", "kwok_parallelism"),
        ("nodeLeaseSeconds", "node_lease_seconds"),
    )
    for key, field in fields:
        if key in block:
            value = block[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"controlPlane.{key} must be a positive integer, got {value!r}")
            values[field] = value
    return ControlPlane(**values)


DURATION = re.compile(r"^([0-9]+(s|m|h))+$")  # Karpenter's duration syntax (consolidateAfter)


def _autoscaling_fields(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A pool's optional `pricePerHour` and `autoscale: {maxNodes, consolidateAfter}`, validated."""
    price = item.get("pricePerHour", PRICE_PER_HOUR.get(str(item.get("instanceType"))))
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or price <= 0):
        raise ConfigError(f"{where}.pricePerHour must be a positive number (USD/node-hour), got {price!r}")
    raw = item.get("autoscale")
    if raw is None:
        return {"price_per_hour": None if price is None else float(price), "autoscale": None}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.autoscale must be a mapping like {{maxNodes: 2}}")
    max_nodes = _require(raw, "maxNodes", int, f"{where}.autoscale")
    if max_nodes < 1:
        raise ConfigError(f"{where}.autoscale.maxNodes must be at least 1")
    after = str(raw.get("consolidateAfter", "10s"))
    if not DURATION.match(after):
        raise ConfigError(f"{where}.autoscale.consolidateAfter must be a duration like 10s or 1m: {after!r}")
    if price is None:
        raise ConfigError(
            f"{where}.pricePerHour is required with autoscale: "
            f"no catalog price for {item.get('instanceType')!r}"
        )
    autoscale = Autoscale(max_nodes=max_nodes, consolidate_after=after)
    return {"price_per_hour": float(price), "autoscale": autoscale}


def default_config_text() -> str:
    """The packaged default cluster YAML."""
    return resources.files("paceline_dev.localcluster").joinpath("cluster.yaml").read_text()


def load_config(path: Path | None = None) -> ClusterConfig:
    """Load the cluster YAML (the packaged default when no path is given)."""
    text = default_config_text() if path is None else path.read_text()
    return parse_config(yaml.safe_load(text) or {})


def node_manifests(config: ClusterConfig) -> list[dict[str, Any]]:
    """Node objects for every fake GPU node: real GPU-node labels, GPU capacity, loopback addresses."""
    nodes: list[dict[str, Any]] = []
    index = 0
    for pool in config.pools:
        for i in range(pool.nodes):
            name = node_name(pool, i)
            ip = str(NODE_IP_BASE + index)
            pod_cidr = str(ipaddress.IPv4Network((int(POD_CIDR_BASE.network_address) + 256 * index, 24)))
            capacity = {**NODE_RESOURCES, "nvidia.com/gpu": str(pool.gpus_per_node)}
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            KWOK_ANNOTATION: "fake",
                            SPEED_ANNOTATION: f"{pool.relative_speed:g}",
                        },
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "node.kubernetes.io/instance-type": pool.instance_type,
                            "nvidia.com/gpu.present": "true",
                            "nvidia.com/gpu.product": pool.gpu_product,
                            "nvidia.com/gpu.count": str(pool.gpus_per_node),
                            "nvidia.com/gpu.memory": str(pool.gpu_memory_mib),
                            POOL_LABEL: pool.name,
                            "type": "kwok",
                        },
                    },
                    "spec": {
                        "podCIDR": pod_cidr,
                        "podCIDRs": [pod_cidr],
                        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                    },
                    "status": {
                        "addresses": [
                            {"type": "InternalIP", "address": ip},
                            {"type": "Hostname", "address": name},
                        ],
                        "capacity": capacity,
                        "allocatable": capacity,
                        "nodeInfo": {
                            "architecture": "amd64",
                            "operatingSystem": "linux",
                            "kubeletVersion": "fake",
                            "containerRuntimeVersion": "paceline-process-runtime",
                        },
                    },
                }
            )
            index += 1
    return nodes
