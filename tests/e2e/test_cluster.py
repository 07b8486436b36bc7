"""The local cluster itself: heterogeneous GPU nodes, loopback-only addresses, the chart's RBAC."""

from __future__ import annotations

import ipaddress

import pytest
from e2e_support import Kube

pytestmark = pytest.mark.e2e


def test_nodes_are_ready_heterogeneous_gpu_nodes_on_loopback(kube: Kube) -> None:
    nodes = kube.items("nodes", "default")
    products = {n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in nodes}
    pools = {n["metadata"]["labels"]["paceline.dev/pool"] for n in nodes}
    assert len(products) >= 3 and len(pools) >= 3
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) == int(labels["nvidia.com/gpu.count"])
        assert "node.kubernetes.io/instance-type" in labels
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        for addr in node["status"]["addresses"]:
            if addr["type"] == "InternalIP":
                assert ipaddress.ip_address(addr["address"]).is_loopback
        assert ipaddress.ip_network(node["spec"]["podCIDR"]).subnet_of(ipaddress.ip_network("127.0.0.0/8"))


def test_service_cidr_is_loopback(kube: Kube) -> None:
    svc = kube.get("service", "kubernetes", "default")
    assert svc is not None
    assert ipaddress.ip_address(svc["spec"]["clusterIP"]).is_loopback


def test_control_plane_runs_the_pinned_version(kube: Kube) -> None:
    from paceline_dev.localcluster import versions

    out = kube.run("version", "-o", "json").stdout
    assert f'"gitVersion": "{versions.KUBERNETES}"' in out


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", "pods", True),
        ("create", "persistentvolumeclaims", True),  # spec.checkpoint.volumeClaimTemplate
        ("delete", "persistentvolumeclaims", False),  # the garbage collector removes them with the job
        ("patch", "trainingjobs.paceline.dev --subresource=status", True),
        ("patch", "trainingjobs.paceline.dev", False),  # only its status: kopf adds no finalizer here
        ("list", "nodes", True),
        ("delete", "nodes", False),
        ("create", "secrets", True),  # each job's control token (tests/e2e/test_security.py: the full list)
        ("list", "secrets", False),  # never listed or watched: only its own, by name
        ("update", "secrets", False),
        ("delete", "trainingjobs.paceline.dev", False),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", False),
    ],
)
def test_operator_service_account_is_least_privilege(
    kube: Kube, verb: str, resource: str, allowed: bool
) -> None:
    proc = kube.run(
        "auth",
        "can-i",
        verb,
        *resource.split(),
        "-n",
        "default",
        "--as=system:serviceaccount:paceline-system:paceline-operator",
        check=False,
    )
    assert proc.stdout.strip() == ("yes" if allowed else "no")
