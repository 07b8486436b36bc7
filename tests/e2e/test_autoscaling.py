"""Node autoscaling of the local cluster: Karpenter's kwok provider adds GPU nodes of a pool for pods the
pool's static nodes cannot hold — loopback addresses, the pool's labels, its relative speed — and removes
them once they are empty; Karpenter itself only ever talks to loopback."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Kube, busy_static_pods, wait_for

from paceline_dev.localcluster import processes
from paceline_dev.localcluster.config import POOL_LABEL
from paceline_dev.localcluster.karpenter import NODEPOOL_LABEL

pytestmark = pytest.mark.e2e

POOL = "a100"
DEADLINE_S = 300.0  # generous: the e2e machine is small and may be busy


def _pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "scale-out"}},
        "spec": {
            "nodeSelector": {POOL_LABEL: POOL},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", 'echo "speed=$PACELINE_SIM_SPEED node=$NODE"; exec sleep 3600'],
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_karpenter_adds_pool_nodes_for_pending_pods_and_removes_them_when_empty(
    kube: Kube, namespace: str
) -> None:
    pool = next(p for p in kube.cluster.config().pools if p.name == POOL)
    assert pool.autoscale is not None and pool.autoscale.max_nodes >= 2
    # pods of other tests (namespaces deleted without waiting) must be gone from the pool's static nodes
    wait_for("the pool's static nodes to be free", lambda: not busy_static_pods(kube, POOL), DEADLINE_S, 2)
    added = 2
    names = [f"gpu-hungry-{i}" for i in range(pool.nodes + added)]  # one whole node each
    for name in names:
        assert kube.apply(_pod(name, pool.gpus_per_node), namespace).returncode == 0

    def all_running() -> list[dict[str, Any]] | None:
        pods = kube.items("pods", namespace, "app=scale-out")
        running = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        return running if len(running) == len(names) else None

    pods = wait_for("every pod Running, on static and Karpenter nodes", all_running, DEADLINE_S, 2)
    claims = kube.items("nodeclaims", "default", f"{NODEPOOL_LABEL}={POOL}")
    assert len(claims) == added
    nodes = {n["metadata"]["name"]: n for n in kube.items("nodes", "default", f"{NODEPOOL_LABEL}={POOL}")}
    assert len(nodes) == added
    for node in nodes.values():
        labels = node["metadata"]["labels"]
        assert labels[POOL_LABEL] == POOL
        assert labels["nvidia.com/gpu.product"] == pool.gpu_product
        assert labels["node.kubernetes.io/instance-type"] == pool.instance_type
        assert labels["nvidia.com/gpu.count"] == str(pool.gpus_per_node)
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) == pool.gpus_per_node
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
        assert _ready(node)
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal and all(_loopback(a) for a in internal)
        assert ipaddress.ip_network(node["spec"]["podCIDR"]).subnet_of(ipaddress.ip_network("127.0.0.0/8"))
    on_added = [p for p in pods if p["spec"]["nodeName"] in nodes]
    assert len(on_added) == added
    logs = Path(kube.cluster.paths.state) / "logs" / "pods"
    for pod in pods:
        assert _loopback(pod["status"]["podIP"]) and _loopback(pod["status"]["hostIP"])
    for pod in on_added:  # the process runtime runs them at the pool's relative speed
        log = logs / f"{namespace}_{pod['metadata']['name']}.log"
        line = f"speed={pool.relative_speed:g} node={pod['spec']['nodeName']}"
        wait_for(
            f"{log.name} to say {line!r}", lambda log=log, line=line: log.exists() and line in log.read_text()
        )

    kube.run("delete", "pods", "-n", namespace, "-l", "app=scale-out", "--wait=false")
    wait_for(
        "Karpenter to remove its empty nodes (consolidation WhenEmpty)",
        lambda: (
            not kube.items("nodeclaims", "default", f"{NODEPOOL_LABEL}={POOL}")
            and not kube.items("nodes", "default", f"{NODEPOOL_LABEL}={POOL}")
        ),
        DEADLINE_S,
        2,
    )
    static = kube.items("nodes", "default", f"{POOL_LABEL}={POOL}")
    assert len(static) == pool.nodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    host = bytes.fromhex(hex_address.split(":")[0])
    # /proc/net/tcp* print each 32-bit word in host (little-endian) order
    raw = b"".join(host[i : i + 4][::-1] for i in range(0, len(host), 4))
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    ip6 = ipaddress.IPv6Address(raw)
    return ip6.ipv4_mapped or ip6


def test_karpenter_listens_and_connects_on_loopback_only(kube: Kube) -> None:
    proc = processes.running(kube.cluster.paths.state, "karpenter")
    assert proc is not None
    inodes = _socket_inodes(proc.pid)
    seen = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                local, remote = _address(fields[1]), _address(fields[2])
                seen.append((table, str(local), str(remote)))
                assert local.is_loopback, (table, str(local))
                assert remote.is_loopback or remote.is_unspecified, (table, str(remote))
    assert any(remote.startswith("127.") for _, _, remote in seen)  # its API server connection
