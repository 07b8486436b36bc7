"""The one module that talks to the Kubernetes API (everything else is pure)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from paceline import api

_lock = threading.Lock()
_api_client: client.ApiClient | None = None


def api_client() -> client.ApiClient:
    """Shared API client: in-cluster credentials when in a pod, else $KUBECONFIG."""
    global _api_client
    with _lock:
        if _api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            _api_client = client.ApiClient()
        return _api_client


def _core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def _custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def _sanitize(obj: Any) -> Any:
    return api_client().sanitize_for_serialization(obj)


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    """The TrainingJob, or None when it is gone."""
    try:
        job: Any = _custom().get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return dict(job)


def list_job_pods(namespace: str, job: str) -> list[dict[str, Any]]:
    """Pods labelled as belonging to the job."""
    pods = _core().list_namespaced_pod(namespace, label_selector=f"{api.LABEL_JOB}={job}")
    return [_sanitize(p) for p in pods.items]


def get_service(namespace: str, name: str) -> dict[str, Any] | None:
    """A Service, or None."""
    try:
        return dict(_sanitize(_core().read_namespaced_service(name, namespace)))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def get_configmap(namespace: str, name: str) -> dict[str, Any] | None:
    """A ConfigMap, or None."""
    try:
        return dict(_sanitize(_core().read_namespaced_config_map(name, namespace)))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def list_nodes() -> list[dict[str, Any]]:
    """Every Node."""
    return [_sanitize(n) for n in _core().list_node().items]


def list_all_pods() -> list[dict[str, Any]]:
    """Every Pod in the cluster (for GPU accounting)."""
    return [_sanitize(p) for p in _core().list_pod_for_all_namespaces().items]


def create(obj: Mapping[str, Any]) -> bool:
    """Create a Pod, Service or ConfigMap; False when it already exists (409)."""
    ns = obj["metadata"]["namespace"]
    creators: dict[str, Callable[..., Any]] = {
        "Pod": _core().create_namespaced_pod,
        "Service": _core().create_namespaced_service,
        "ConfigMap": _core().create_namespaced_config_map,
    }
    try:
        creators[obj["kind"]](ns, obj)
    except ApiException as err:
        if err.status == 409:
            return False
        raise
    return True


def patch_configmap(obj: Mapping[str, Any]) -> None:
    """Merge-patch a ConfigMap's data and labels."""
    meta = obj["metadata"]
    _core().patch_namespaced_config_map(
        meta["name"], meta["namespace"], {"metadata": {"labels": meta.get("labels", {})}, "data": obj["data"]}
    )


def delete_pod(namespace: str, name: str, *, grace_seconds: int | None = None) -> None:
    """Delete a pod; already gone is fine."""
    try:
        _core().delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds)
    except ApiException as err:
        if err.status != 404:
            raise


def patch_job_status(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch the status subresource (keys set to None are removed)."""
    try:
        _custom().patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": dict(status)}
        )
    except ApiException as err:
        if err.status != 404:
            raise


def emit_event(job: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
    """Record a core/v1 Event on the TrainingJob (what `kubectl describe` shows)."""
    meta = job["metadata"]
    now = datetime.now(UTC)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": "paceline-operator"},
        "reportingComponent": "paceline.dev/operator",
        "reportingInstance": "paceline-operator",
        "firstTimestamp": now.isoformat(),
        "lastTimestamp": now.isoformat(),
        "eventTime": None,
        "count": 1,
    }
    try:
        _core().create_namespaced_event(meta["namespace"], event)  # type: ignore[arg-type]
    except ApiException as err:
        if err.status not in (403, 404, 409):
            raise
