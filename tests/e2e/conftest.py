"""e2e fixtures: one real local cluster (control plane, kwok nodes, process runtime, operator) per session."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Kube

from paceline_dev.localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCluster]:
    state = Path(os.environ.get("PACELINE_E2E_STATE") or tmp_path_factory.mktemp("cluster")) / "state"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()

    lines = []

    def report(message: str) -> None:  # on the terminal as it happens: a cold build takes minutes
        with capture.global_and_fixture_disabled():
            first = "" if lines else "\n"  # off the line pytest -v has started for the first test
            print(f"{first}[e2e {time.monotonic() - started:5.0f} s] {message}", flush=True)
        lines.append(message)

    local = LocalCluster(state, config_path=REPO / "tests" / "e2e" / "cluster.yaml", report=report)
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_monitoring.py runs last: its dashboard check queries what the training tests left behind."""
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_monitoring.py")
