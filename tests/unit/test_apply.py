"""apply: what pods refer to is created first, the pods side by side; a refused pod is reported back."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from paceline.adapters import kube
from paceline.controller import apply as apply_module
from paceline.controller.decide.model import Decision

JOB = {"metadata": {"name": "j", "namespace": "ns", "generation": 3}}


def obj(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns"}}


class FakeApi:
    """kube.create that takes a while, records order and overlap, and refuses or finds some names."""

    def __init__(self) -> None:
        self.refuse: set[str] = set()
        self.exists: set[str] = set()
        self.order: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

    def create(self, body: Mapping[str, Any]) -> bool:
        name = body["metadata"]["name"]
        with self.lock:
            self.order.append(name)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.02)
        with self.lock:
            self.in_flight -= 1
        if name in self.refuse:
            raise kube.Rejected(f"{name} is invalid")
        return name not in self.exists


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi()
    monkeypatch.setattr(kube, "create", api.create)
    return api


def test_children_first_then_pods_side_by_side(fake: FakeApi) -> None:
    pods = [obj("Pod", f"j-worker-{i}") for i in range(8)]
    decision = Decision(create=[obj("ConfigMap", "j-control"), obj("Service", "j"), *pods])
    applied = apply_module.apply(JOB, decision)
    assert fake.order[:2] == ["j-control", "j"]
    assert sorted(fake.order[2:]) == sorted(p["metadata"]["name"] for p in pods)
    assert fake.most_in_flight > 1  # the pods did not wait for each other
    assert {o["metadata"]["name"] for o in applied.created} == {"j-control", "j", *fake.order[2:]}
    assert applied.rejected is None


def test_existing_objects_are_not_reported_as_created(fake: FakeApi) -> None:
    fake.exists = {"j-worker-1"}
    applied = apply_module.apply(JOB, Decision(create=[obj("Pod", "j-worker-0"), obj("Pod", "j-worker-1")]))
    assert [o["metadata"]["name"] for o in applied.created] == ["j-worker-0"]


def test_a_refused_pod_is_reported_and_the_others_are_kept(fake: FakeApi) -> None:
    fake.refuse = {"j-worker-1"}
    pods = [obj("Pod", f"j-worker-{i}") for i in range(3)]
    applied = apply_module.apply(JOB, Decision(create=pods))
    assert applied.rejected is not None
    assert (applied.rejected.pod, applied.rejected.generation) == ("j-worker-1", 3)
    assert sorted(o["metadata"]["name"] for o in applied.created) == ["j-worker-0", "j-worker-2"]


def test_a_refused_child_stops_before_any_pod(fake: FakeApi) -> None:
    fake.refuse = {"j-control"}
    applied = apply_module.apply(
        JOB, Decision(create=[obj("ConfigMap", "j-control"), obj("Pod", "j-worker-0")])
    )
    assert applied.rejected is not None and applied.rejected.pod == "j-control"
    assert fake.order == ["j-control"]
