"""Asynchronous mode on the local cluster: a parameter server plus workers, measured staleness turned into
implicit momentum, explicit momentum retuned live when the worker count changes."""

from __future__ import annotations

import urllib.request

import pytest
from e2e_support import Kube, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e


def _job(replicas: int) -> dict:
    return {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "async"},
        "spec": {
            "mode": "Asynchronous",
            "replicas": {"min": replicas, "max": replicas},
            "globalBatchSize": 96,
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
        },
    }


def _momentum(kube: Kube, namespace: str) -> dict | None:
    job = kube.get("tj", "async", namespace) or {}
    return (job.get("status") or {}).get("momentum")


def test_staleness_sets_momentum_and_a_resize_retunes_it(kube: Kube, namespace: str) -> None:
    assert kube.apply(_job(4), namespace).returncode == 0
    momentum = wait_for("status.momentum", lambda: _momentum(kube, namespace), timeout_s=150)
    explicit, implicit, total = (float(momentum[k]) for k in ("explicit", "implicit", "total"))
    assert abs(1 - (1 - explicit) * (1 - implicit) - total) < 2e-3  # the momenta compose multiplicatively
    assert -0.3 <= explicit < 0.9 and implicit > 0.3  # 4 asynchronous workers: implicit ≈ 1 − 1/4

    ps = kube.items("pods", namespace, "paceline.dev/role=ps")
    assert len(ps) == 1
    assert "nvidia.com/gpu" not in (ps[0]["spec"]["containers"][0].get("resources") or {}).get("limits", {})

    def update_counts() -> list[float] | None:
        with urllib.request.urlopen(f"http://{ps[0]['status']['podIP']}:9400/metrics", timeout=5) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        staleness = families["paceline_ps_update_staleness"]
        counts = [s.value for s in staleness.samples if s.name.endswith("_count")]
        return counts if len(counts) == 4 and all(c > 0 for c in counts) else None

    # every worker's updates, each with its τ (the last worker to start may still be importing torch)
    wait_for("updates from all 4 workers", update_counts, timeout_s=120)

    # a worker set change (4 → 2) is a trigger: the explicit momentum is retuned for the new M
    changed = _job(2)
    assert kube.apply(changed, namespace).returncode == 0

    def retuned_for_two() -> list[dict]:
        return [
            e
            for e in kube.events(namespace, "async")
            if e["reason"] == "MomentumRetuned" and "2 workers" in e["message"]
        ]

    events = wait_for("MomentumRetuned after the resize", retuned_for_two, timeout_s=150, interval_s=1)
    assert "(workers)" in events[0]["message"]
    after = wait_for(
        "status.momentum for 2 workers",
        # less staleness tolerates more explicit momentum (how much more depends on the measured curvature)
        lambda: (m := _momentum(kube, namespace)) and float(m["explicit"]) > explicit + 0.03 and m,
        timeout_s=60,
    )
    assert abs(float(after["implicit"]) - 0.5) < 0.2
    kube.run("delete", "tj", "async", "-n", namespace)
