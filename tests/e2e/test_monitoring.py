"""The cluster's Prometheus and the chart's Grafana dashboard, queried for real.

Runs after the other e2e tests (conftest orders it last): by then a synchronous job has trained with a
straggler and been rebalanced, and an asynchronous job has had its momentum retuned, so every panel of the
dashboard has something to show over the session. Every panel's PromQL goes through Prometheus' HTTP API as
Grafana would send it; a query error or a panel without data fails the test."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Kube, promql, wait_for

from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "paceline" / "dashboards" / "paceline.json"
PRODUCERS = ("test_training.py", "test_asynchronous.py")  # the jobs that give every panel data


def grafana_expr(expr: str) -> str:
    """A panel's PromQL as Grafana sends it with every template variable at "All"."""
    return (
        expr.replace("$__rate_interval", "30s")  # 4 × the local scrape interval, at least
        .replace("$namespace", ".*")
        .replace("$trainingjob", ".*")
    )


def _annotated_pod() -> dict[str, Any]:
    """A Running pod that asks to be scraped (the jobs of earlier tests may be gone by now)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "scraped",
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9400"},
        },
        "spec": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "idle", "image": "busybox", "command": ["sleep", "600"]}],
        },
    }


def test_prometheus_discovers_only_loopback_targets_through_the_api_server(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    assert kube.apply(_annotated_pod(), namespace).returncode == 0

    def active() -> dict[str, Any] | None:
        with urllib.request.urlopen(f"{cluster.prometheus_url}/api/v1/targets", timeout=10) as resp:
            found = json.loads(resp.read())["data"]
        pools = {t["scrapePool"] for t in found["activeTargets"]}
        return found if {"paceline-operator", "kubernetes-pods"} <= pools else None

    targets = wait_for("the operator and a pod as scrape targets", active, timeout_s=120, interval_s=2)
    assert all(re.match(r"127\.", t["labels"]["instance"]) for t in targets["activeTargets"])
    operator = [t for t in targets["activeTargets"] if t["scrapePool"] == "paceline-operator"]
    assert operator and operator[0]["health"] == "up"
    with urllib.request.urlopen(f"{cluster.prometheus_url}/api/v1/status/config", timeout=10) as resp:
        config = json.loads(resp.read())["data"]["yaml"]
    assert "remote_write" not in config and "alertmanagers" not in config


def test_every_dashboard_panel_returns_data(cluster: LocalCluster, request: pytest.FixtureRequest) -> None:
    ran = {Path(str(item.fspath)).name for item in request.session.items}
    if not set(PRODUCERS) <= ran:
        pytest.skip(f"the panels' data comes from {', '.join(PRODUCERS)}: run the whole e2e tier")
    dashboard = json.loads(DASHBOARD.read_text())
    end = time.time()
    window = {"start": f"{end - 3600:.0f}", "end": f"{end:.0f}", "step": "5"}
    empty = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            series = promql(cluster, grafana_expr(target["expr"]), **window)
            points = [v for s in series for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if not points:
                empty.append(f"{panel['title']!r} ({target['refId']}): {target['expr']}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"]).groups()
        values = {
            s["metric"].get(label)
            for s in promql(cluster, f"count by ({label}) ({grafana_expr(metric)})", **window)
        }
        assert values - {None}, f"variable ${variable['name']} has no values"
