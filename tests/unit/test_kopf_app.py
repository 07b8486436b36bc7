"""The kopf wiring's own pieces that need no cluster."""

from __future__ import annotations


def test_kopf_decodes_watch_streams_with_orjson() -> None:
    """Pins the one kopf internal the operator relies on: if kopf moves it, this fails (nothing breaks)."""
    import orjson
    from kopf._cogs.clients import api as kopf_api

    from paceline.kopf_app import fast_watch_decoding

    assert fast_watch_decoding()
    assert kopf_api.json.loads is orjson.loads
    assert kopf_api.json.loads(b'{"type": "ADDED", "object": {"kind": "Pod"}}')["object"] == {"kind": "Pod"}


def test_pods_are_indexed_by_job_and_by_the_gpus_they_hold() -> None:
    import asyncio
    import types

    from paceline.controller.inventory import GpuPod
    from paceline.kopf_app import pods

    woken: list[tuple[str, str]] = []
    memo = types.SimpleNamespace(fleet=types.SimpleNamespace(poke=woken.append))
    labels = {"app.kubernetes.io/managed-by": "paceline", "paceline.dev/job": "demo"}
    body = {
        "metadata": {"name": "demo-worker-0", "namespace": "ml", "uid": "u", "labels": labels},
        "spec": {"nodeName": "gpu-t4-0", "containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
        "status": {"phase": "Running", "podIP": "127.16.0.2"},
    }
    found = asyncio.run(pods(namespace="ml", labels=labels, body=body, memo=memo))  # type: ignore[arg-type]
    assert found is not None and woken == [("ml", "demo")]
    assert found[("job", "ml", "demo")]["status"] == {"phase": "Running", "podIP": "127.16.0.2"}
    assert found[("node", "gpu-t4-0")] == GpuPod(node="gpu-t4-0", gpus=2, job=("ml", "demo"))
    foreign = {**body, "metadata": {**body["metadata"], "labels": {}}}
    assert asyncio.run(pods(namespace="ml", labels={}, body=foreign, memo=memo)) == {  # type: ignore[arg-type]
        ("node", "gpu-t4-0"): GpuPod(node="gpu-t4-0", gpus=2, job=None)
    }
    assert woken == [("ml", "demo")]  # a pod that is not Paceline's wakes nobody
