"""The one module that talks to the Kubernetes API with the `kubernetes` client (kopf's watches aside).

Writes return the object the API server answered with, so the caller can keep its cache ahead of the watch.
"""

from __future__ import annotations

import json
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


class Rejected(Exception):
    """The API server refused an object as invalid (422); the message is its explanation."""


def api_client() -> client.ApiClient:
    """Shared API client: in-cluster credentials when in a pod, else $KUBECONFIG."""
    global _api_client
    with _lock:
        if _api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = 16  # the operator's worker threads share one pool
            _api_client = client.ApiClient(configuration)
        return _api_client


def _core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def _custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def _plain(obj: Any) -> dict[str, Any]:
    return dict(api_client().sanitize_for_serialization(obj))


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        return str(err.reason)


def get_configmap(namespace: str, name: str) -> dict[str, Any] | None:
    """A ConfigMap, or None (read only when a job's model comes from one)."""
    try:
        return _plain(_core().read_namespaced_config_map(name, namespace))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def list_nodes() -> list[dict[str, Any]]:
    """Every Node (for `paceline plan` against a live cluster)."""
    return [_plain(n) for n in _core().list_node().items]


def list_pods() -> list[dict[str, Any]]:
    """Every Pod bound to a node (for `paceline plan` against a live cluster)."""
    return [_plain(p) for p in _core().list_pod_for_all_namespaces(field_selector="spec.nodeName!=").items]


def create(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Create a Pod, Service, ConfigMap or PersistentVolumeClaim and return it; None when it already exists
    (409); raises `Rejected` when the API server refuses it as invalid (422)."""
    ns = obj["metadata"]["namespace"]
    creators: dict[str, Callable[..., Any]] = {
        "Pod": _core().create_namespaced_pod,
        "Service": _core().create_namespaced_service,
        "ConfigMap": _core().create_namespaced_config_map,
        "PersistentVolumeClaim": _core().create_namespaced_persistent_volume_claim,
    }
    try:
        return _plain(creators[obj["kind"]](ns, obj))
    except ApiException as err:
        if err.status == 409:
            return None
        if err.status == 422:
            raise Rejected(_message(err)) from None
        raise


def patch_configmap(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Merge-patch a ConfigMap's data and labels; returns the ConfigMap."""
    meta = obj["metadata"]
    body = {"metadata": {"labels": meta.get("labels", {})}, "data": obj["data"]}
    return _plain(_core().patch_namespaced_config_map(meta["name"], meta["namespace"], body))


def delete_pod(namespace: str, name: str) -> None:
    """Delete a pod; already gone is fine."""
    try:
        _core().delete_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status != 404:
            raise


def patch_job_status(namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
    """Merge-patch the status subresource (keys set to None are removed); the job, or None when gone."""
    try:
        job: Any = _custom().patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": dict(status)}
        )
    except ApiException as err:
        if err.status != 404:
            raise
        return None
    return dict(job)


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
