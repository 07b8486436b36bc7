"""The local cluster's Prometheus configuration and `kubectl logs` plumbing (pure parts and loopback I/O)."""

from __future__ import annotations

import socket
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from paceline_dev.localcluster import podlogs, prometheus


def test_prometheus_scrapes_the_operator_and_annotated_pods_at_loopback_addresses_only(
    tmp_path: Path,
) -> None:
    config = prometheus.config(
        api_server="https://127.0.0.1:6443",
        ca_file=tmp_path / "ca.crt",
        token_file=tmp_path / "token",
        operator_target="127.0.0.1:9401",
    )
    assert set(config) == {"global", "scrape_configs"}  # no alerting, no remote_write, no rule files
    operator, pods = config["scrape_configs"]
    assert operator["static_configs"] == [{"targets": ["127.0.0.1:9401"]}]
    sd = pods["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod" and sd["api_server"].startswith("https://127.0.0.1:")
    assert sd["authorization"]["credentials_file"] == str(tmp_path / "token")
    keep = [r for r in pods["relabel_configs"] if r.get("action") == "keep"]
    assert any(
        r["source_labels"] == ["__meta_kubernetes_pod_ip"] and r["regex"] == prometheus.LOOPBACK for r in keep
    )
    assert any(r["source_labels"] == ["__address__"] for r in keep)
    with pytest.raises(ValueError, match="loopback"):
        prometheus.config(
            api_server="https://127.0.0.1:6443",
            ca_file=Path("ca"),
            token_file=Path("t"),
            operator_target="10.0.0.1:1",
        )
    rules = prometheus.rbac_manifests()[1]["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_the_debian_mirror_comes_from_the_machines_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    )
    assert prometheus.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert prometheus.debian_mirror(tmp_path) == "http://other.example/debian"


def test_process_output_becomes_a_cri_log_and_a_plain_log(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        ["bash", "-c", "echo one; echo two >&2; printf 'three\\nfour'"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    cri = podlogs.cri_path(tmp_path, namespace="ns", name="p", uid="u1", container="trainer")
    thread = podlogs.pump(
        {"stdout": proc.stdout, "stderr": proc.stderr}, plain=tmp_path / "ns_p.log", cri=cri
    )
    proc.wait()
    thread.join(10)
    lines = cri.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines if "stdout" in line] == [
        "stdout F one",
        "stdout F three",
        "stdout F four",
    ]
    assert "stderr F two" in cri.read_text()
    assert sorted((tmp_path / "ns_p.log").read_text().split()) == ["four", "one", "three", "two"]
    assert podlogs.cri_line("stdout", b"x\n", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == (
        b"2026-01-02T03:04:05.000006000Z stdout F x\n"
    )


def test_a_recreated_pod_points_previous_at_the_last_pod_of_its_name(tmp_path: Path) -> None:
    first = podlogs.cri_path(tmp_path, namespace="ns", name="w-0", uid="a", container="c")
    first.parent.mkdir(parents=True)
    first.write_text("")
    assert podlogs.previous_log(tmp_path, namespace="ns", name="w-0", uid="a", container="c") is None
    assert podlogs.previous_log(tmp_path, namespace="ns", name="w-0", uid="b", container="c") == first
    pod = {"metadata": {"name": "w-0", "namespace": "ns", "uid": "b"}}
    doc = podlogs.logs_object(pod, logs_file=tmp_path / "b.log", previous=first)
    assert doc["kind"] == "Logs" and doc["metadata"]["ownerReferences"][0]["uid"] == "b"
    alone = podlogs.logs_object(pod, logs_file=tmp_path / "b.log", previous=None)["spec"]["logs"][0]
    assert (
        not Path(alone["previousLogsFile"]).exists()
        and "no-earlier-pod-named-w-0" in alone["previousLogsFile"]
    )
    assert doc["spec"]["logs"] == [
        {"logsFile": str(tmp_path / "b.log"), "previousLogsFile": str(first), "follow": True}
    ]


def test_node_kubelet_endpoints_forward_to_kwok_on_loopback() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())

    threading.Thread(target=echo, daemon=True).start()
    nodes = [
        {
            "metadata": {"name": "gpu-0"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.9.9"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            },
        },
        {
            "metadata": {"name": "real"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
        },
    ]
    endpoints = podlogs.kubelet_endpoints(nodes, lambda n: n["metadata"]["name"] == "gpu-0")
    assert endpoints == {("127.0.9.9", port)}
    ports = podlogs.KubeletPorts()
    ports.ensure(endpoints | {("10.0.0.1", port)})  # never anything but loopback
    assert set(ports.listening) == {("127.0.9.9", port)}
    with socket.create_connection(("127.0.9.9", port), timeout=10) as client:
        client.sendall(b"logs")
        assert client.recv(100) == b"LOGS"
    server.close()
