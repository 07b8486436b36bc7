"""docs/metrics.md is the reference of every metric: each row exists in the registry of its source with the
documented type and labels, and every family a registry exposes has a row (both directions)."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from paceline import operator_metrics
from paceline.balancer import StragglerStatus
from paceline.balancer.straggler import StragglerState
from paceline_worker import gpu_metrics
from paceline_worker.asynchronous.hyperparameters import Hyperparameters
from paceline_worker.asynchronous.ps_metrics import PsMetrics
from paceline_worker.asynchronous.shard import AppliedUpdate
from paceline_worker.control_auth import Refusal
from paceline_worker.metrics import StepTiming, WorkerMetrics, launcher_metrics
from paceline_worker.reinforcement.rl_metrics import LearnerMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(paceline_[a-z_]+)` \| (\w+) \|([^|]*)\| (\w+) \|", re.MULTILINE)
Family = tuple[str, frozenset[str]]  # type, label names


def documented() -> dict[str, dict[str, Family]]:
    """source → exposed name → (type, labels), from the table in docs/metrics.md."""
    table: dict[str, dict[str, Family]] = {}
    for name, kind, labels, source in ROW.findall(DOC.read_text()):
        label_names = frozenset(re.findall(r"`([a-z_]+)`", labels))
        assert name not in table.get(source, {}), f"{name} documented twice"
        table.setdefault(source, {})[name] = (kind, label_names)
    return table


def exposed(registry: CollectorRegistry) -> dict[str, Family]:
    """Exposed family name (counters with _total) → (type, label names) of everything the registry holds."""
    families: dict[str, Family] = {}
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        families[name] = (family.type, frozenset(labels))
    return families


class FakeNvml:
    """Stands in for pynvml: one GPU, 40 % busy."""

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=40)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=2**30, total=2**34)


def worker_registry(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    monkeypatch.setattr(gpu_metrics, "_nvml", lambda: FakeNvml())
    metrics = WorkerMetrics(rank=0, job="demo", gpu_index=0)
    assert metrics.gpu_enabled
    metrics.observe_step(
        timing=StepTiming(data=0.01, compute=0.1, communication=0.02), samples=32, loss=1.0, epoch=0
    )
    metrics.observe_assignment(version=1, batch_size=32, global_batch_size=64, step=0, applied_at=1.0)
    metrics.observe_simulation(1.0)
    metrics.refused(Refusal.WRONG)
    return metrics.registry


def ps_registry() -> CollectorRegistry:
    metrics = PsMetrics(job="demo", shard=0)
    metrics.observe_update(
        AppliedUpdate(
            index=4, worker="w0", read_version=2, version=5, staleness=2, learning_rate=0.05, momentum=0.9
        )
    )
    metrics.observe_update(  # one update staler than maxStaleness: dropped, counted
        AppliedUpdate(
            index=5,
            worker="w1",
            read_version=1,
            version=5,
            staleness=4,
            learning_rate=0.05,
            momentum=0.9,
            dropped=True,
        )
    )
    metrics.observe_hyperparameters(Hyperparameters(version=1, learning_rate=0.05, momentum=0.9))
    metrics.observe_parameters(100)
    metrics.observe_connections(1)
    metrics.refused(Refusal.MISSING)
    return metrics.registry


def launcher_registry() -> CollectorRegistry:
    registry, refused = launcher_metrics("demo")
    refused(Refusal.UNCONFIGURED)
    return registry


def learner_registry() -> CollectorRegistry:
    metrics = LearnerMetrics(job="demo", learner=0)
    metrics.env_steps.inc(512)
    metrics.lag.observe(1)
    return metrics.registry


def operator_registry() -> CollectorRegistry:
    operator_metrics.record_rebalance(namespace="ns", job="doc")
    operator_metrics.record_step_times(namespace="ns", job="doc", predicted_s=0.1, measured_s=0.12)
    operator_metrics.record_throughput(namespace="ns", job="doc", samples_per_second=500.0, efficiency=0.9)
    healthy = StragglerStatus(state=StragglerState.HEALTHY)
    operator_metrics.record_stragglers(namespace="ns", job="doc", stragglers={0: healthy})
    operator_metrics.record_momentum(
        namespace="ns",
        job="doc",
        momentum={"explicit": "0.4", "implicit": "0.5", "total": "0.9"},
        retuned=True,
    )
    operator_metrics.observe_reconcile(0.01)
    return operator_metrics.REGISTRY


def test_every_documented_metric_is_exposed_and_every_exposed_one_documented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = documented()
    registries = {
        "worker": worker_registry(monkeypatch),
        "ps": ps_registry(),
        "launcher": launcher_registry(),
        "learner": learner_registry(),
        "operator": operator_registry(),
    }
    assert set(doc) == set(registries)
    for source, registry in registries.items():
        have = exposed(registry)
        assert sorted(set(doc[source]) - set(have)) == [], f"documented but not exposed by the {source}"
        assert sorted(set(have) - set(doc[source])) == [], (
            f"exposed by the {source} but not in docs/metrics.md"
        )
        for name, (kind, labels) in doc[source].items():
            assert have[name] == (kind, labels), f"{name}: docs say {kind} {sorted(labels)}"
    operator_metrics.forget_job(namespace="ns", job="doc")


def test_names_follow_prometheus_conventions() -> None:
    for table in documented().values():
        for name, (kind, labels) in table.items():
            assert name.endswith("_total") == (kind == "counter"), name
            assert not {"job", "namespace", "instance"} & labels, f"{name} would clash with target labels"
            assert not re.search(r"_(ms|milliseconds|percent|factor|count)$", name), f"{name}: use base units"


DASHBOARD = DOC.parents[1] / "charts" / "paceline" / "dashboards" / "paceline.json"


def test_dashboard_queries_only_documented_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = {name for table in documented().values() for name in table}
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            for name in re.findall(r"\bpaceline_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in names or base in names, f"{panel['title']!r} queries undocumented {name}"
                used.add(name if name in names else base)
    # what a user looks at first is on it
    assert {
        "paceline_worker_samples_per_second",
        "paceline_operator_efficiency_ratio",
        "paceline_operator_rebalances_total",
        "paceline_operator_momentum",
    } <= used
