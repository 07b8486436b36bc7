"""Local cluster pieces that are pure: the node-pool YAML, node manifests, stragglers, env resolution."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from paceline_dev.localcluster.binaries import (
    BuildError,
    kwok_race_free_ip_pools,
    staging_replaces,
    wrapper_gomod,
)
from paceline_dev.localcluster.config import (
    ConfigError,
    default_config_text,
    load_config,
    node_manifests,
    parse_config,
)
from paceline_dev.localcluster.runtime import idle, random_delays, resolve_env, straggler_factor
from paceline_worker.simulation import RandomDelay, parse_random_delays


def test_default_pools_are_heterogeneous_and_loopback() -> None:
    config = load_config()
    assert len({p.gpu_product for p in config.pools}) >= 3
    assert len({p.relative_speed for p in config.pools}) >= 3
    nodes = node_manifests(config)
    ips = [a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
    assert len(set(ips)) == len(nodes)
    assert all(ipaddress.ip_address(ip).is_loopback for ip in ips)
    cidrs = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in nodes]
    assert all(c.subnet_of(ipaddress.ip_network("127.0.0.0/8")) for c in cidrs)
    assert all(not a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert node["status"]["capacity"]["nvidia.com/gpu"] == labels["nvidia.com/gpu.count"]


def test_a_500_node_cluster_keeps_every_address_loopback_and_distinct() -> None:
    pools = [{**p, "nodes": 250} for p in yaml.safe_load(default_config_text())["pools"][:2]]
    nodes = node_manifests(parse_config({"pools": pools}))
    ips = {a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"] == "InternalIP"}
    cidrs = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in nodes]
    assert len(nodes) == len(ips) == len(set(cidrs)) == 500
    assert all(ipaddress.ip_address(ip).is_loopback for ip in ips)
    assert all(c.subnet_of(ipaddress.ip_network("127.0.0.0/8")) and c.prefixlen == 24 for c in cidrs)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "pools must be a non-empty list"),
        ({"pools": [{"name": "a"}]}, "pools[0].gpuProduct is required"),
        (
            {
                "pools": [
                    {
                        "name": "a",
                        "gpuProduct": "X",
                        "gpuMemoryMiB": 1,
                        "instanceType": "i",
                        "nodes": 1,
                        "gpusPerNode": 1,
                        "relativeSpeed": 0,
                    }
                ]
            },
            "relativeSpeed must be positive",
        ),
        (
            {
                "pools": [
                    {
                        "name": "a",
                        "gpuProduct": "X",
                        "gpuMemoryMiB": 1,
                        "instanceType": "i",
                        "nodes": 1,
                        "gpusPerNode": 1,
                        "relativeSpeed": 1,
                    }
                ],
                "stragglers": [{"node": "gpu-b-0", "factor": 2}],
            },
            "is not a node of this cluster",
        ),
    ],
)
def test_bad_cluster_yaml_says_what_to_fix(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        parse_config(raw)
    assert message in str(err.value)


def test_straggler_schedule_window_and_scope() -> None:
    raw = {
        "pools": [
            {
                "name": "a",
                "gpuProduct": "X",
                "gpuMemoryMiB": 1,
                "instanceType": "i",
                "nodes": 2,
                "gpusPerNode": 1,
                "relativeSpeed": 1,
            }
        ],
        "stragglers": [
            {"node": "gpu-a-1", "factor": 3, "fromSeconds": 10, "untilSeconds": 20},
            {"pool": "a", "randomDelay": {"distribution": "gamma", "meanMilliseconds": 20, "shape": 2}},
        ],
    }
    config = parse_config(raw)
    assert straggler_factor(config.stragglers, node="gpu-a-1", pool="a", elapsed_s=5) == 1.0
    assert straggler_factor(config.stragglers, node="gpu-a-1", pool="a", elapsed_s=15) == 3.0
    assert straggler_factor(config.stragglers, node="gpu-a-1", pool="a", elapsed_s=25) == 1.0
    assert straggler_factor(config.stragglers, node="gpu-a-0", pool="a", elapsed_s=15) == 1.0
    delays = random_delays(config.stragglers, node="gpu-a-0", pool="a")
    assert delays == [{"distribution": "gamma", "meanSeconds": 0.02, "shape": 2.0}]
    # the worker's simulation reads what the runtime writes into PACELINE_SIM_SCHEDULE
    assert parse_random_delays(json.loads(json.dumps(delays))) == (RandomDelay(mean_s=0.02, shape=2.0),)


def test_env_resolution_like_a_kubelet_with_dns_mapped_to_pod_ips() -> None:
    pod = {
        "metadata": {"name": "j-worker-1", "namespace": "ml", "uid": "u"},
        "spec": {"nodeName": "gpu-a-0"},
        "status": {"podIP": "127.16.0.3"},
    }
    container = {
        "env": [
            {"name": "MASTER_ADDR", "value": "j-worker-0.j.ml.svc.cluster.local"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "GREETING", "value": "hi from $(POD_IP)"},
            {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            {"name": "PEERS", "value": "j-worker-0.j.ml.svc:29600,j-worker-1.j.ml.svc.cluster.local:29600"},
            {"name": "OTHER_NS", "value": "x-0.x.other.svc.cluster.local"},
        ]
    }
    env = resolve_env(
        container,
        pod,
        lookup_ip=lambda ns, host, sub: {
            ("ml", "j-worker-0", "j"): "127.16.0.2",
            ("ml", "j-worker-1", "j"): "127.16.0.9",
        }.get((ns, host, sub)),
        configmap_value=lambda ns, name, key: "v",
    )
    assert env == {
        "MASTER_ADDR": "127.16.0.2",
        "POD_IP": "127.16.0.3",
        "GREETING": "hi from 127.16.0.3",
        "CFG": "v",
        "PEERS": "127.16.0.2:29600,127.16.0.9:29600",
        "OTHER_NS": "x-0.x.other.svc.cluster.local",
    }


def test_wrapper_module_pins_every_staging_module() -> None:
    upstream = (
        "require (\n\tgo.etcd.io/etcd/server/v3 v3.6.8 // indirect\n)\n"
        "replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n"
        "\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n)"
    )
    assert staging_replaces(upstream, "v0.36.3") == [
        ("k8s.io/api", "v0.36.3"),
        ("k8s.io/client-go", "v0.36.3"),
    ]
    gomod = wrapper_gomod(kubernetes_version="v1.36.3", kubernetes_gomod=upstream)
    assert "\tk8s.io/kubernetes v1.36.3\n" in gomod
    assert "\tgo.etcd.io/etcd/server/v3 v3.6.8\n" in gomod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.36.3" in gomod


def test_local_volumes_bind_claims_and_map_mount_paths(tmp_path: Path) -> None:
    from paceline_dev.localcluster.volumes import mount_map, remap, volume_for_claim, waiting_claims

    claim = {
        "metadata": {"name": "ckpt", "namespace": "ml", "uid": "u1"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "5Gi"}}},
    }
    bound = {"metadata": {"name": "old", "namespace": "ml", "uid": "u2"}, "spec": {"volumeName": "pv-x"}}
    assert waiting_claims([claim, bound]) == [claim]
    volume = volume_for_claim(claim, tmp_path)
    assert volume["spec"]["claimRef"]["uid"] == "u1" and volume["spec"]["capacity"] == {"storage": "5Gi"}
    assert volume["spec"]["hostPath"]["path"] == str(tmp_path / "ml" / "ckpt")
    pod = {"spec": {"volumes": [{"name": "c", "persistentVolumeClaim": {"claimName": "ckpt"}}]}}
    container = {"volumeMounts": [{"name": "c", "mountPath": "/var/run/paceline/checkpoint"}]}
    mounts = mount_map(pod, container, {"ckpt": "/state/volumes/ml/ckpt"})
    env = remap(
        {
            "PACELINE_CHECKPOINT_DIR": "/var/run/paceline/checkpoint/job",
            "OTHER": "/var/run/paceline/checkpointer",
        },
        mounts,
    )
    assert env == {
        "PACELINE_CHECKPOINT_DIR": "/state/volumes/ml/ckpt/job",
        "OTHER": "/var/run/paceline/checkpointer",
    }


def test_placeholders_and_load_test_pods_run_no_process() -> None:
    def pod(image: str, annotations: dict[str, str] | None = None) -> dict:
        return {"metadata": {"annotations": annotations or {}}, "spec": {"containers": [{"image": image}]}}

    assert idle(pod("registry.k8s.io/pause:3.10"))
    assert idle(pod("mirror.example/k8s/pause@sha256:abc"))
    assert idle(pod("python:3.11", {"paceline.dev/no-process": "true"}))
    assert not idle(pod("python:3.11")) and not idle(pod("ghcr.io/example/pauseless:1"))


def test_the_runtime_maps_a_workers_token_secret_to_an_owner_only_file(tmp_path: Path) -> None:
    """What the kubelet does with the operator's token volume: the Secret's key as a file at the mount path
    (owner-readable only), and PACELINE_TOKEN_FILE pointed there."""
    from jobs import PLAN, job

    from paceline import api
    from paceline.builders import build_worker_pod
    from paceline.controller.decide.plan import job_ref
    from paceline_dev.localcluster.volumes import remap, secret_mounts, write_secret
    from paceline_worker.wire import Assignment, Env

    tj = job()
    pod = build_worker_pod(
        job_ref(tj),
        spec=api.parse_spec(tj["spec"]),
        placement=PLAN.workers[0],
        world_size=3,
        attempt=0,
        plan_hash="h",
        assignment=Assignment(version=1, batch_sizes=(56, 56, 16)),
        port=29500,
        sharding="{}",
    )
    container = pod["spec"]["containers"][0]
    ((mount_path, volume, secret, optional),) = secret_mounts(pod, container)
    assert (volume, secret, optional) == (api.TOKEN_VOLUME, "demo-control-token", False)
    directory = tmp_path / "secrets" / "uid" / volume
    write_secret(directory, {"token": b"t0k3n"})
    write_secret(directory, {"token": b"t0k3n"})  # a second start of the same pod: rewritten, not refused
    assert (directory / "token").read_bytes() == b"t0k3n"
    assert (directory / "token").stat().st_mode & 0o777 == 0o400
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert remap(env, {mount_path: str(directory)})[Env.TOKEN_FILE] == str(directory / "token")


def test_kwok_build_makes_one_pod_ip_pool_per_node() -> None:
    source = (
        "\tpool, ok := c.ipPools.Load(cidr)\n\tif ok {\n\t\treturn pool, nil\n\t}\n"
        "\tipnet, err := utilsnet.ParseCIDR(cidr)\n"
        "\tpool = newIPPool(ipnet)\n\tc.ipPools.Store(cidr, pool)\n\treturn pool, nil\n"
    )
    patched = kwok_race_free_ip_pools(source)
    assert "c.ipPools.Store(" not in patched
    assert "\tpool, _ = c.ipPools.LoadOrStore(cidr, newIPPool(ipnet))\n\treturn pool, nil\n" in patched
    with pytest.raises(BuildError, match="update kwok_race_free_ip_pools"):
        kwok_race_free_ip_pools(source.replace("c.ipPools.Store(cidr, pool)", "c.pools.Set(cidr, pool)"))
