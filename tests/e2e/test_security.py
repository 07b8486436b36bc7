"""Least privilege and authenticated control on the real control plane: a job runs in a namespace whose Pod
Security admission enforces `restricted`; its workers take the operator's (token-bearing) assignments but
refuse an unauthenticated or wrong-token PUT to their pod IP, which changes nothing; the operator's
ServiceAccount holds exactly the RBAC rules it needs and was refused nothing; the chart's NetworkPolicy is
accepted by the API server."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import Kube, wait_for
from prometheus_client.parser import text_string_to_metric_families

from paceline_dev.localcluster import versions
from paceline_dev.localcluster.binaries import ensure_binaries
from paceline_dev.localcluster.cluster import (
    HELM_RELEASE,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    LocalCluster,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
FORGED = {"version": 10_000, "batchSizes": [63, 1], "learningRate": 5.0, "momentum": 0.0}


def _http(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


def _reachable(url: str) -> Any:
    try:
        return _http("GET", url)
    except OSError:  # the worker is still importing torch: not listening yet
        return None


def _refused(base: str) -> dict[str, float]:
    status, text = _http("GET", f"{base}/metrics")  # open to anyone, as Prometheus needs
    assert status == 200
    families = text_string_to_metric_families(text)
    (family,) = [f for f in families if f.name == "paceline_worker_refused_writes"]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


def _job() -> dict[str, Any]:
    """Two workers on the T4 nodes, one of which turns 3x slower (tests/e2e/cluster.yaml): the operator
    rebalances, so its own authenticated PUT is exercised too."""
    return {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "locked"},
        "spec": {
            "replicas": {"min": 2, "max": 2},
            "gpusPerWorker": 4,
            "globalBatchSize": 64,
            "placement": {"pools": ["t4"]},
            "balancing": {"cooldownSeconds": 5, "halfLifeSeconds": 10},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "paceline/worker:dev",
                            "command": ["python", "examples/train_digits.py", "--epochs", "30"],
                            "env": [{"name": "PACELINE_SIM_SAMPLE_COST_S", "value": "0.02"}],
                        }
                    ]
                }
            },
        },
    }


def test_a_job_in_a_restricted_namespace_runs_and_takes_only_the_operators_writes(
    kube: Kube, namespace: str
) -> None:
    kube.run("label", "namespace", namespace, RESTRICTED, "pod-security.kubernetes.io/enforce-version=latest")
    # the API server's PodSecurity admission is on: a pod without a restricted security context is refused
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }
    refused = kube.apply(probe, namespace)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr

    assert kube.apply(_job(), namespace).returncode == 0
    job = wait_for(
        "workers running",
        lambda: (
            (j := kube.get("tj", "locked", namespace))
            and (j.get("status") or {}).get("phase") == "Running"
            and j
        ),
        timeout_s=240,
    )

    # the token Secret: made by the operator, owned by the job
    secret = kube.get("secret", "locked-control-token", namespace)
    assert secret is not None
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("TrainingJob", job["metadata"]["uid"])
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 32

    pods = {
        p["metadata"]["labels"]["paceline.dev/rank"]: p
        for p in kube.items("pods", namespace, "paceline.dev/job=locked")
    }
    assert sorted(pods) == ["0", "1"]
    for pod in pods.values():
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert not [v for v in spec["volumes"] if "projected" in v]  # no ServiceAccount token volume
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert any(
            (v.get("secret") or {}).get("secretName") == "locked-control-token" for v in spec["volumes"]
        )

    rank0 = f"http://{pods['0']['status']['podIP']}:9400"
    assert pods["0"]["status"]["podIP"].startswith("127.")
    wait_for("rank 0 serving", lambda: _reachable(f"{rank0}/assignment"), timeout_s=240)

    # the operator's own PUT (bearing the token) is taken: rank 0 holds the version the operator decided
    def operator_push_taken() -> int | None:
        control = kube.get("configmap", "locked-control", namespace) or {"data": {}}
        decided = json.loads(control["data"].get("assignment.json") or "{}").get("version", 0)
        status, view = _http("GET", f"{rank0}/assignment")
        held = (
            {(view.get(k) or {}).get("version") for k in ("current", "pending")} if status == 200 else set()
        )
        return decided if decided >= 2 and decided in held else None

    decided = wait_for("the operator's rebalance taken by rank 0", operator_push_taken, timeout_s=300)

    # an unauthenticated and a wrong-token PUT to the pod IP: refused, counted, nothing changed
    assert _refused(rank0) == {"missing": 0, "wrong": 0, "unconfigured": 0}
    status, body = _http("PUT", f"{rank0}/assignment", FORGED)
    assert status == 401 and body["reason"] == "missing"
    assert _http("PUT", f"{rank0}/assignment", FORGED, token="guessed")[0] == 403
    launcher = f"http://{pods['0']['status']['podIP']}:9401/generation"
    assert (
        _http(
            "PUT", launcher, {"generation": 9, "nnodes": 1, "nodeRank": 0, "masterAddr": "x", "masterPort": 1}
        )[0]
        == 401
    )
    status, view = _http("GET", f"{rank0}/assignment")
    held = [view.get("current") or {}, view.get("pending") or {}]
    assert all(a.get("version") != FORGED["version"] for a in held), view
    assert all(a.get("batchSizes") != FORGED["batchSizes"] for a in held), view
    assert _refused(rank0) == {"missing": 1, "wrong": 1, "unconfigured": 0}
    control = kube.get("configmap", "locked-control", namespace)
    assert json.loads(control["data"]["assignment.json"])["version"] >= decided


def test_parameter_servers_in_a_restricted_namespace_refuse_unauthenticated_momentum(
    kube: Kube, namespace: str
) -> None:
    kube.run("label", "namespace", namespace, RESTRICTED)
    doc = _job()
    doc["metadata"]["name"] = "locked-async"
    doc["spec"] = {
        "mode": "Asynchronous",
        "replicas": {"min": 2, "max": 2},
        "globalBatchSize": 64,
        "placement": {"pools": ["a100"]},
        "optimizer": {"learningRate": "0.05", "momentum": "0.9"},
        "asynchronous": {"parameterServers": 1},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "trainer",
                        "image": "paceline/worker:dev",
                        "command": ["python", "examples/train_digits_async.py", "--epochs", "200"],
                        "env": [{"name": "PACELINE_SIM_SAMPLE_COST_S", "value": "0.01"}],
                    }
                ]
            }
        },
    }
    assert kube.apply(doc, namespace).returncode == 0

    def ps_serving() -> tuple[str, dict[str, Any]] | None:
        pods = kube.items("pods", namespace, "paceline.dev/job=locked-async,paceline.dev/role=ps")
        ip = pods[0]["status"].get("podIP") if pods and pods[0]["status"].get("phase") == "Running" else None
        answer = _reachable(f"http://{ip}:9400/status") if ip else None
        return (f"http://{ip}:9400", answer[1]) if answer and answer[0] == 200 else None

    ps, status = wait_for("the parameter server serving", ps_serving, timeout_s=240)
    before = status["hyperparameters"]
    forged = {"version": 10_000, "learningRate": None, "momentum": -0.9}
    reply, body = _http("PUT", f"{ps}/hyperparameters", forged)
    assert reply == 401 and body["reason"] == "missing"
    assert _http("PUT", f"{ps}/hyperparameters", forged, token="guessed")[0] == 403
    after = _http("GET", f"{ps}/status")[1]["hyperparameters"]
    assert after is None or after["version"] != 10_000
    assert before is None or after["version"] >= before["version"]
    text = _http("GET", f"{ps}/metrics")[1]
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "paceline_ps_refused_writes"]
    counts = {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert counts == {"missing": 1, "wrong": 1, "unconfigured": 0}
    kube.run("delete", "tj", "locked-async", "-n", namespace, "--wait=false")


# What the operator's ServiceAccount may do: exactly the chart's rules (README "Least privilege").
EXPECTED_RBAC = {
    "configmaps": {"get", "list", "watch", "create", "patch"},
    "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
    "events": {"create"},
    "nodepools.karpenter.sh": {"list", "watch"},
    "nodes": {"list", "watch"},
    "persistentvolumeclaims": {"list", "watch", "create"},
    "pods": {"list", "watch", "create", "delete"},
    "secrets": {"get", "create"},
    "services": {"list", "watch", "create"},
    "trainingjobs.paceline.dev": {"list", "watch"},
    "trainingjobs.paceline.dev/status": {"patch"},
}
# what every authenticated identity may do (system:basic-user): not the chart's doing
EVERYONE = {
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "selfsubjectreviews.authentication.k8s.io",
}


def can_i_list(text: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` → resource → verbs (non-resource URLs left out)."""
    rules: dict[str, set[str]] = {}
    for line in text.splitlines()[1:]:
        if not line.strip() or line[0].isspace():
            continue  # a non-resource URL row
        resource = line.split()[0]
        verbs = re.findall(r"\[([^\]]*)\]", line)[-1].split()
        rules.setdefault(resource, set()).update(verbs)
    return rules


def test_the_operator_holds_exactly_the_rbac_it_uses(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    who = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    listed = kube.run("auth", "can-i", "--list", f"--as={who}", "-n", namespace).stdout
    rules = {r: v for r, v in can_i_list(listed).items() if r not in EVERYONE}
    assert rules == EXPECTED_RBAC, listed
    assert (
        kube.run(
            "auth", "can-i", "list", "secrets", f"--as={who}", "-n", namespace, check=False
        ).stdout.strip()
        == "no"
    )
    # and it was never refused anything (the API server's audit log of its requests this session)
    entries = [json.loads(line) for line in cluster.audit_log.read_text().splitlines() if line.strip()]
    assert entries, "the audit log holds the operator's requests"
    assert all("authorization.k8s.io/decision" in (e.get("annotations") or {}) for e in entries)
    forbidden = [
        (e["verb"], e.get("requestURI"))
        for e in entries
        if (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
        and not _while_the_api_server_restarted(cluster, e["requestReceivedTimestamp"])
    ]
    assert forbidden == []  # (a create in a namespace being deleted is refused by admission, not by RBAC)


def _while_the_api_server_restarted(cluster: LocalCluster, received: str) -> bool:
    """Whether a request arrived while a restarted API server had not yet read RBAC (it refuses all then)."""
    at = datetime.fromisoformat(received.replace("Z", "+00:00")).timestamp()
    return any(stopped <= at <= ready for stopped, ready in cluster.apiserver_restarts)


def test_the_charts_network_policy_is_accepted_by_the_api_server(kube: Kube, namespace: str) -> None:
    helm = ensure_binaries(lambda _: None).helm
    rendered = subprocess.run(
        [
            str(helm),
            "template",
            HELM_RELEASE,
            str(REPO / "charts" / "paceline"),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--kube-version",
            versions.KUBERNETES.lstrip("v"),
            "--set",
            f"networkPolicy.namespaces={{{namespace}}}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    policies = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "NetworkPolicy"]
    assert [p["metadata"]["namespace"] for p in policies] == [namespace]
    proc = kube.run(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input_text=yaml.safe_dump(policies[0])
    )
    accepted = json.loads(proc.stdout)
    assert accepted["kind"] == "NetworkPolicy" and accepted["spec"]["policyTypes"] == ["Ingress"]
    ports = [sorted(p["port"] for p in rule.get("ports") or []) for rule in accepted["spec"]["ingress"]]
    assert ports == [
        [9400, 9401],
        [],
        [9400],
    ]  # operator: control ports; the job's pods: any; Prometheus: metrics
    assert kube.get("networkpolicy", policies[0]["metadata"]["name"], namespace) is None  # a dry run only
