"""Karpenter as the local cluster's node autoscaler: the pure parts (config, instance types, NodePools,
loopback addresses of the nodes it adds, the loopback-bind patch of its build)."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest

from paceline_dev.localcluster import karpenter
from paceline_dev.localcluster.binaries import BuildError, karpenter_loopback_binds
from paceline_dev.localcluster.config import (
    KWOK_ANNOTATION,
    POOL_LABEL,
    SPEED_ANNOTATION,
    ConfigError,
    load_config,
    node_manifests,
    parse_config,
)

POOL = {
    "name": "a100",
    "gpuProduct": "NVIDIA-A100-SXM4-40GB",
    "gpuMemoryMiB": 40960,
    "instanceType": "p4d.24xlarge",
    "nodes": 1,
    "gpusPerNode": 4,
    "relativeSpeed": 2,
}


def test_default_cluster_autoscales_a100_and_t4_at_catalog_prices() -> None:
    config = load_config()
    scaled = {p.name: p for p in karpenter.autoscaled_pools(config)}
    assert {"a100", "t4"} <= set(scaled)
    assert scaled["a100"].price_per_hour == pytest.approx(32.77)
    assert scaled["t4"].price_per_hour == pytest.approx(3.91)
    assert all(p.autoscale and p.autoscale.consolidate_after == "10s" for p in scaled.values())


def test_instance_types_follow_the_schema_of_karpenters_kwok_catalog() -> None:
    config = parse_config({"pools": [POOL | {"autoscale": {"maxNodes": 3}, "pricePerHour": 30}]})
    (entry,) = json.loads(json.dumps(karpenter.instance_types(config)))
    assert entry["name"] == "p4d.24xlarge"
    assert entry["architecture"] == "amd64" and entry["operatingSystems"] == ["linux"]
    static = node_manifests(config)[0]["status"]["capacity"]
    assert entry["resources"] == static  # the same capacity as the pool's static nodes, GPUs included
    (offering,) = entry["offerings"]
    assert offering["Price"] == 30.0 and offering["Available"] is True
    requirements = {r["key"]: r["values"] for r in offering["Requirements"]}
    assert all(r["operator"] == "In" for r in offering["Requirements"])
    assert requirements["nvidia.com/gpu.product"] == ["NVIDIA-A100-SXM4-40GB"]
    assert requirements["nvidia.com/gpu.count"] == ["4"]
    assert requirements["karpenter.sh/capacity-type"] == ["on-demand"]
    assert "topology.kubernetes.io/zone" in requirements


def test_one_node_pool_per_autoscaled_pool_like_its_static_nodes() -> None:
    t4 = POOL | {"name": "t4", "gpuProduct": "Tesla-T4", "instanceType": "g4dn.12xlarge", "relativeSpeed": 1}
    config = parse_config(
        {"pools": [POOL | {"autoscale": {"maxNodes": 2, "consolidateAfter": "30s"}}, t4]}  # t4: static only
    )
    (pool,) = karpenter.node_pools(config)
    static = node_manifests(config)[0]
    assert pool["apiVersion"] == "karpenter.sh/v1" and pool["metadata"]["name"] == "a100"
    template = pool["spec"]["template"]
    assert template["metadata"]["labels"][POOL_LABEL] == "a100"
    assert template["metadata"]["annotations"][SPEED_ANNOTATION] == "2"
    assert template["spec"]["taints"] == static["spec"]["taints"]
    assert template["spec"]["nodeClassRef"] == {
        "group": "karpenter.kwok.sh",
        "kind": "KWOKNodeClass",
        "name": karpenter.node_class()["metadata"]["name"],
    }
    requirements = {r["key"]: r["values"] for r in template["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["p4d.24xlarge"]
    assert requirements["nvidia.com/gpu.product"] == ["NVIDIA-A100-SXM4-40GB"]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "8"}
    assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"
    assert pool["spec"]["disruption"]["consolidateAfter"] == "30s"
    # what a node Karpenter adds is labelled with: template labels + offering requirements + instance type
    offering = karpenter.instance_types(config)[0]["offerings"][0]
    labels = template["metadata"]["labels"] | {r["key"]: r["values"][0] for r in offering["Requirements"]}
    for key in (POOL_LABEL, "nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"):
        assert labels[key] == static["metadata"]["labels"][key]


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        (POOL | {"autoscale": {}}, "pools[0].autoscale.maxNodes is required"),
        (POOL | {"autoscale": {"maxNodes": 0}}, "maxNodes must be at least 1"),
        (POOL | {"autoscale": 2}, "autoscale must be a mapping"),
        (
            POOL | {"autoscale": {"maxNodes": 1, "consolidateAfter": "soon"}},
            "consolidateAfter must be a duration",
        ),
        (POOL | {"pricePerHour": -1}, "pricePerHour must be a positive number"),
        (POOL | {"instanceType": "x1.big", "autoscale": {"maxNodes": 1}}, "pricePerHour is required"),
        (POOL | {"nodes": 0}, "nodes (0 with autoscale)"),
    ],
)
def test_bad_autoscaling_says_what_to_fix(pool: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"pools": [pool]})


def test_autoscale_only_pool_and_distinct_instance_types() -> None:
    config = parse_config({"pools": [POOL | {"nodes": 0, "autoscale": {"maxNodes": 1}}]})
    assert node_manifests(config) == [] and len(karpenter.node_pools(config)) == 1
    twin = POOL | {"name": "other", "autoscale": {"maxNodes": 1}}
    with pytest.raises(ConfigError, match="distinct instanceTypes"):
        parse_config({"pools": [POOL | {"autoscale": {"maxNodes": 1}}, twin]})


def _node(name: str, *, ip: str | None = None, cidr: str | None = None, fake: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": f"2026-01-01T00:00:{name[-1]}0Z",
            "annotations": {KWOK_ANNOTATION: "fake"} if fake else {},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]} if ip else {},
    }


def test_nodes_karpenter_adds_get_free_loopback_addresses() -> None:
    static = node_manifests(load_config())
    joined = [_node("kwok-a100-1"), _node("kwok-a100-2"), _node("kwok-t4-3", ip="127.1.0.1")]
    other = _node("real-node-4", fake=False)
    registrations = karpenter.registration_patches([*static, *joined, other])
    assert [r.node for r in registrations] == ["kwok-a100-1", "kwok-a100-2", "kwok-t4-3"]
    ips = [r.internal_ip for r in registrations]
    assert ips == ["127.1.0.2", "127.1.0.3", None]  # 127.1.0.1 is taken
    cidrs = [ipaddress.ip_network(r.pod_cidr or "") for r in registrations]
    taken = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in static]
    for cidr in cidrs:
        assert cidr.subnet_of(ipaddress.ip_network("127.0.0.0/8"))
        assert not any(cidr.overlaps(t) for t in taken)
        assert not cidr.overlaps(ipaddress.ip_network("127.96.0.0/20"))  # Services
    assert len(set(cidrs)) == 3
    status = registrations[0].status_patch()
    assert status == {
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "127.1.0.2"},
                {"type": "Hostname", "address": "kwok-a100-1"},
            ]
        }
    }
    assert registrations[2].status_patch() is None
    assert registrations[0].spec_patch() == {"spec": {"podCIDR": str(cidrs[0]), "podCIDRs": [str(cidrs[0])]}}
    assert karpenter.registration_patches(static) == []  # static nodes come with their addresses


def test_karpenter_build_binds_metrics_and_health_to_loopback() -> None:
    source = (
        'Metrics: server.Options{\n\tBindAddress: fmt.Sprintf(":%d", o.MetricsPort),\n},\n'
        'HealthProbeBindAddress: fmt.Sprintf(":%d", o.HealthProbePort),\n'
    )
    patched = karpenter_loopback_binds(source)
    assert patched.count('fmt.Sprintf("127.0.0.1:%d", ') == 2 and '":%d"' not in patched
    with pytest.raises(BuildError, match="expected 2 binds"):
        karpenter_loopback_binds(source.split("Health")[0])
