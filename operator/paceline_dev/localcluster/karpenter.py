"""Karpenter's kwok provider as the local cluster's node autoscaler (dev/test only): what it is given.

From the cluster YAML's autoscaled pools (``autoscale: {maxNodes: N}``) this makes Karpenter's
instance-types file (the schema of its embedded ``kwok/cloudprovider/instance_types.json``: offering
requirements become node labels, resources become the node's allocatable, prices rank offerings), the
``KWOKNodeClass`` and one NodePool per pool. Nodes Karpenter adds look like the pool's static nodes (labels,
GPU taint, relative speed) and get loopback addresses the way a kubelet and the node IPAM controller would
give them: see `registration_patches`, which the process runtime applies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from paceline import api
from paceline_dev.localcluster.config import (
    KWOK_ANNOTATION,
    NODE_RESOURCES,
    POOL_LABEL,
    SPEED_ANNOTATION,
    ClusterConfig,
    Pool,
)

NODE_CLASS = "paceline"  # the one KWOKNodeClass every NodePool refers to
MANAGED_BY = {"app.kubernetes.io/managed-by": "paceline"}  # on what `paceline cluster up` applies
NODEPOOL_LABEL = "karpenter.sh/nodepool"  # Karpenter's label on the NodeClaims and nodes of a NodePool
CAPACITY_TYPE = "on-demand"
ZONE = "paceline-local-a"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}  # as on static GPU nodes
# Addresses of nodes that join after start-up (Karpenter's): node IPs 127.1.x.y, a /24 of pods each in
# 127.128.0.0/9 — clear of the static nodes (127.0.1.1 + i, 127.16.i.0/24 up to 127.31.255.0/24), kwok's
# default pod range (127.15.0.0/16) and the Service range (127.96.0.0/20).
JOINED_NODE_IPS = ipaddress.IPv4Network("127.1.0.0/16")
JOINED_POD_CIDRS = ipaddress.IPv4Network("127.128.0.0/9")
JOINED_POD_PREFIX = 24


def autoscaled_pools(config: ClusterConfig) -> list[Pool]:
    """Pools Karpenter may add nodes to."""
    return [pool for pool in config.pools if pool.autoscale is not None]


def _requirement(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": [value]}


def instance_types(config: ClusterConfig) -> list[dict[str, Any]]:
    """Karpenter's ``INSTANCE_TYPES_FILE_PATH`` content: one instance type per autoscaled pool."""
    types = []
    for pool in autoscaled_pools(config):
        types.append(
            {
                "name": pool.instance_type,
                "architecture": "amd64",
                "operatingSystems": ["linux"],
                "resources": NODE_RESOURCES | {"nvidia.com/gpu": str(pool.gpus_per_node)},
                "offerings": [
                    {
                        "Price": pool.price_per_hour,
                        "Available": True,
                        "Requirements": [
                            _requirement("karpenter.sh/capacity-type", CAPACITY_TYPE),
                            _requirement("topology.kubernetes.io/zone", ZONE),
                            # offering requirements become node labels: the GPU labels of a real GPU node
                            _requirement("nvidia.com/gpu.product", pool.gpu_product),
                            _requirement("nvidia.com/gpu.count", str(pool.gpus_per_node)),
                            _requirement("nvidia.com/gpu.memory", str(pool.gpu_memory_mib)),
                        ],
                    }
                ],
            }
        )
    return types


def node_class() -> dict[str, Any]:
    """The KWOKNodeClass the NodePools launch nodes from."""
    return {
        "apiVersion": "karpenter.kwok.sh/v1alpha1",
        "kind": "KWOKNodeClass",
        "metadata": {"name": NODE_CLASS, "labels": dict(MANAGED_BY)},
    }


def node_pools(config: ClusterConfig) -> list[dict[str, Any]]:
    """One NodePool per autoscaled pool: its instance type and GPU, a GPU limit, empty nodes removed."""
    pools = []
    for pool in autoscaled_pools(config):
        assert pool.autoscale is not None
        pools.append(
            {
                "apiVersion": "karpenter.sh/v1",
                "kind": "NodePool",
                "metadata": {
                    "name": pool.name,
                    "labels": {**MANAGED_BY, POOL_LABEL: pool.name},
                    # what Paceline's scale-out reads as this pool's price (the catalog's, if absent)
                    "annotations": {
                        api.PRICE_ANNOTATION: f"{(pool.price_per_hour or 0) / pool.gpus_per_node:.4f}"
                    },
                },
                "spec": {
                    "template": {
                        "metadata": {
                            "labels": {
                                POOL_LABEL: pool.name,
                                "nvidia.com/gpu.present": "true",
                                "type": "kwok",
                            },
                            "annotations": {SPEED_ANNOTATION: f"{pool.relative_speed:g}"},
                        },
                        "spec": {
                            "nodeClassRef": {
                                "group": "karpenter.kwok.sh",
                                "kind": "KWOKNodeClass",
                                "name": NODE_CLASS,
                            },
                            "requirements": [
                                _requirement("node.kubernetes.io/instance-type", pool.instance_type),
                                _requirement("nvidia.com/gpu.product", pool.gpu_product),
                                _requirement("karpenter.sh/capacity-type", CAPACITY_TYPE),
                            ],
                            "taints": [dict(GPU_TAINT)],
                            "expireAfter": "Never",
                        },
                    },
                    "limits": {"nvidia.com/gpu": str(pool.autoscale.max_nodes * pool.gpus_per_node)},
                    "disruption": {
                        "consolidationPolicy": "WhenEmpty",
                        "consolidateAfter": pool.autoscale.consolidate_after,
                        "budgets": [{"nodes": "100%"}],
                    },
                },
            }
        )
    return pools


@dataclass(frozen=True, kw_only=True)
class Registration:
    """What a node that joined without loopback addresses gets: an InternalIP and/or a pod CIDR."""

    node: str
    internal_ip: str | None  # None: it has one
    pod_cidr: str | None  # None: it has one

    def status_patch(self) -> dict[str, Any] | None:
        """Patch of the node's status (addresses merge by type), if it needs an InternalIP."""
        if self.internal_ip is None:
            return None
        addresses = [
            {"type": "InternalIP", "address": self.internal_ip},
            {"type": "Hostname", "address": self.node},
        ]
        return {"status": {"addresses": addresses}}

    def spec_patch(self) -> dict[str, Any] | None:
        """Patch of the node's spec (podCIDR may be set once), if it needs a pod CIDR."""
        if self.pod_cidr is None:
            return None
        return {"spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]}}


def _internal_ip(node: Mapping[str, Any]) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address"):
            return str(address["address"])
    return None


def registration_patches(nodes: Iterable[Mapping[str, Any]]) -> list[Registration]:
    """Loopback addresses for kwok-managed nodes that have none (Karpenter creates nodes without them).

    Pure: free node IPs and pod CIDRs are those no node holds, lowest first, so a node that goes frees its
    addresses for the next one. Nodes that are not kwok's (``kwok.x-k8s.io/node: fake``) are left alone.
    """
    nodes = list(nodes)
    used_ips = {ip for ip in (_internal_ip(n) for n in nodes) if ip}
    used_cidrs = {
        ipaddress.ip_network(c, strict=False)
        for n in nodes
        for c in ((n.get("spec") or {}).get("podCIDRs") or [(n.get("spec") or {}).get("podCIDR")])
        if c
    }
    free_ips = (str(ip) for ip in JOINED_NODE_IPS.hosts() if str(ip) not in used_ips)
    free_cidrs = (
        str(c)
        for c in JOINED_POD_CIDRS.subnets(new_prefix=JOINED_POD_PREFIX)
        if not any(c.overlaps(u) for u in used_cidrs)
    )
    registrations = []
    for node in sorted(
        nodes, key=lambda n: (n["metadata"].get("creationTimestamp") or "", n["metadata"]["name"])
    ):
        meta, spec = node["metadata"], node.get("spec") or {}
        if (meta.get("annotations") or {}).get(KWOK_ANNOTATION) != "fake" or meta.get("deletionTimestamp"):
            continue
        needs_ip = _internal_ip(node) is None
        needs_cidr = not spec.get("podCIDR")
        if needs_ip or needs_cidr:
            registrations.append(
                Registration(
                    node=meta["name"],
                    internal_ip=next(free_ips) if needs_ip else None,
                    pod_cidr=next(free_cidrs) if needs_cidr else None,
                )
            )
    return registrations
