"""e2e fixtures: one real local cluster (control plane, kwok nodes, process runtime, operator) per session."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paceline.localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


class Kube:
    """kubectl as a user runs it, against the test cluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def run(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = self.cluster.run_kubectl(*args, input_text=input_text, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, doc: dict[str, Any] | str, namespace: str) -> subprocess.CompletedProcess[str]:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
        return self.run("apply", "-n", namespace, "-f", "-", input_text=text, check=False)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        proc = self.run(*args, check=False)
        if proc.returncode != 0:
            return None
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = json.loads(self.run(*args).stdout)["items"]
        return items

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.items("events", namespace)
            if e["involvedObject"].get("kind") == "TrainingJob" and e["involvedObject"]["name"] == name
        ]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90.0, interval_s: float = 0.5) -> Any:
    """Poll until check() returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    state = Path(os.environ.get("PACELINE_E2E_STATE") or tmp_path_factory.mktemp("cluster")) / "state"
    local = LocalCluster(state, config_path=REPO / "tests" / "e2e" / "cluster.yaml", report=print)
    try:
        local.up(operator=True)
        yield local
    finally:
        local.down(purge=False)


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> Kube:
    return Kube(cluster)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


def training_job(
    name: str, *, command: list[str], replicas: tuple[int, int] = (2, 3), **spec: Any
) -> dict[str, Any]:
    """A TrainingJob whose workers run `command` as local processes."""
    doc: dict[str, Any] = {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "replicas": {"min": replicas[0], "max": replicas[1]},
            "globalBatchSize": 64,
            "template": {
                "spec": {
                    "containers": [{"name": "trainer", "image": "paceline/worker:dev", "command": command}]
                }
            },
        },
    }
    doc["spec"].update(spec)
    return doc
