"""The one module that talks to the Kubernetes API with the `kubernetes` client (kopf's watches aside).

Writes return the object the API server answered with, so the caller can keep its cache ahead of the watch.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import urllib3
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
                path = os.environ.get("KUBECONFIG")  # read now, not when the kubernetes package was imported
                config.load_kube_config(config_file=path if path and os.pathsep not in path else None)
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = 32  # pass and create threads share one pool
            _api_client = client.ApiClient(configuration)
        return _api_client


def _call(
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    answer: bool = True,
    decode: Callable[[bytes], Any] = json.loads,
) -> Any:
    """One request in plain JSON. The generated client would validate a dict body into pydantic models and
    build models from the answer only to turn them back into dicts: CPU the operator spends per write."""
    api = api_client()
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    request = api.param_serialize(
        method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = api.call_api(*request)
    response.read()
    if not 200 <= response.status <= 299:
        text = (response.data or b"").decode("utf-8", errors="replace")
        raise ApiException.from_response(http_resp=response, body=text, data=None)
    return decode(response.data) if answer and response.data else None


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        return str(err.reason)


_PATHS = {
    "Pod": "pods",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Event": "events",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Secret": "secrets",
}
MERGE_PATCH = "application/merge-patch+json"


def _collection(namespace: str, kind: str) -> str:
    return f"/api/v1/namespaces/{namespace}/{_PATHS[kind]}"


def _scope(namespace: str | None) -> str:
    """The path segment of a namespace ("" for the whole cluster)."""
    return f"/namespaces/{namespace}" if namespace else ""


def _job_path(namespace: str, name: str) -> str:
    return f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.PLURAL}/{name}"


def get_configmap(namespace: str, name: str) -> dict[str, Any] | None:
    """A ConfigMap, or None (read only when a job's model comes from one)."""
    try:
        return dict(_call("GET", f"{_collection(namespace, 'ConfigMap')}/{name}"))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def get_token(namespace: str, name: str, key: str) -> str | None:
    """The value of `key` in Secret `name` (a job's control token), or None when the Secret or the key is
    missing. Only the operator's own token Secrets are read, each once per job (then remembered)."""
    try:
        secret = _call("GET", f"{_collection(namespace, 'Secret')}/{name}")
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    value = (secret.get("data") or {}).get(key)
    try:
        return base64.b64decode(value).decode() if value else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def list_nodes() -> list[dict[str, Any]]:
    """Every Node (for `paceline plan` against a live cluster)."""
    return list(_call("GET", "/api/v1/nodes")["items"])


def list_pods() -> list[dict[str, Any]]:
    """Every Pod bound to a node (for `paceline plan` against a live cluster)."""
    return list(_call("GET", "/api/v1/pods?fieldSelector=spec.nodeName%21%3D")["items"])


def api_ready() -> bool:
    """Whether the API server is ready, asked anonymously: after a restart it serves requests before its
    authorizer has read RBAC (403 for what is allowed, even /readyz); its /readyz waits for that (the
    informer-sync check). Asked without the operator's credentials, so the wait is not a refusal of the
    operator. Where anonymous requests are not allowed at all (401) it cannot tell, and says ready."""
    configuration = api_client().configuration
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED" if configuration.verify_ssl else "CERT_NONE",
        ca_certs=configuration.ssl_ca_cert,
    )
    try:
        answer = pool.request("GET", f"{configuration.host}/readyz", timeout=5.0, retries=False)
    except urllib3.exceptions.HTTPError:
        return False
    finally:
        pool.clear()
    return answer.status in (200, 401)


class Expired(Exception):
    """A watch's resource version is too old (410 Gone): list again."""


POD_PAGE = 500  # pods per list request


def list_all_pods(namespace: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Every pod (of `namespace`, or of the cluster) and the listing's resource version, page by page."""
    scope = _scope(namespace)
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        query = f"?limit={POD_PAGE}" + (f"&continue={token}" if token else "")
        page = _call("GET", f"/api/v1{scope}/pods{query}", decode=orjson.loads)
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return items, str(page["metadata"]["resourceVersion"])


class PodStream:
    """One watch request on pods from a resource version; `batches()` yields the decoded events as they
    arrive, a list per chunk read; `close()` (from any thread) ends it."""

    def __init__(self, resource_version: str, namespace: str | None = None, timeout_s: int = 300) -> None:
        scope = _scope(namespace)
        query = f"?watch=true&allowWatchBookmarks=true&resourceVersion={resource_version}"
        query += f"&timeoutSeconds={timeout_s}"
        client_ = api_client()
        request = client_.param_serialize(
            "GET",
            f"/api/v1{scope}/pods{query}",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        answer = client_.call_api(*request, _request_timeout=(10, timeout_s + 30))
        if answer.status == 410:
            raise Expired()
        if not 200 <= answer.status <= 299:
            raise ApiException(http_resp=answer, body=answer.read().decode("utf-8", "replace"), data=None)
        self._response = answer.response

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        """Lists of watch events ({"type", "object"}); raises `Expired` on a 410 in the stream."""
        rest = b""
        for chunk in self._response.stream(None):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            events = [orjson.loads(line) for line in lines if line.strip()]
            for event in events:
                if event.get("type") == "ERROR":
                    if (event.get("object") or {}).get("code") == 410:
                        raise Expired()
                    raise ApiException(status=0, reason=str(event.get("object")))
            if events:
                yield events

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.shutdown()
        with contextlib.suppress(Exception):
            self._response.release_conn()


def list_jobs(namespace: str | None = None) -> list[dict[str, Any]]:
    """Every TrainingJob, or those of one namespace (for `paceline top`)."""
    scope = _scope(namespace)
    return list(_call("GET", f"/apis/{api.GROUP}/{api.VERSION}{scope}/{api.PLURAL}")["items"])


def create(obj: Mapping[str, Any]) -> bool:
    """Create a Pod, Service, ConfigMap, PersistentVolumeClaim or Secret; False when it already exists
    (409); raises `Rejected` when the API server refuses it as invalid (422). The answer is not read: the
    watch brings the object anyway (a Secret: the operator remembers the token it wrote)."""
    try:
        _call("POST", _collection(obj["metadata"]["namespace"], obj["kind"]), obj, answer=False)
        return True
    except ApiException as err:
        if err.status == 409:
            return False
        if err.status == 422:
            raise Rejected(_message(err)) from None
        raise


def patch_configmap(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Merge-patch a ConfigMap's data and labels; returns the ConfigMap."""
    meta = obj["metadata"]
    body = {"metadata": {"labels": meta.get("labels", {})}, "data": obj["data"]}
    path = f"{_collection(meta['namespace'], 'ConfigMap')}/{meta['name']}"
    return dict(_call("PATCH", path, body, content_type=MERGE_PATCH))


def delete_pod(namespace: str, name: str) -> None:
    """Delete a pod; already gone is fine."""
    try:
        _call("DELETE", f"{_collection(namespace, 'Pod')}/{name}", answer=False)
    except ApiException as err:
        if err.status != 404:
            raise


def patch_job_status(namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
    """Merge-patch the status subresource (keys set to None are removed); the job, or None when gone."""
    try:
        job = _call(
            "PATCH",
            f"{_job_path(namespace, name)}/status",
            {"status": dict(status)},
            content_type=MERGE_PATCH,
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
        _call("POST", _collection(meta["namespace"], "Event"), event, answer=False)
    except ApiException as err:
        if err.status not in (403, 404, 409):
            raise
