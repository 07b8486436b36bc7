"""A list+watch cache of one kind of object, kept by a thread — so the process runtime reads the cluster
from memory instead of listing every pod and node several times a second."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("paceline.watchcache")
WATCH_TIMEOUT_S = 300


def _key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class WatchCache:
    """The current objects of one list call (e.g. `CoreV1Api.list_node`), as plain dicts."""

    def __init__(
        self,
        list_call: Callable[..., Any],
        *,
        changed: threading.Event,
        stop: threading.Event,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self._call = list_call
        selectors = {"field_selector": field_selector, "label_selector": label_selector}
        self._selector = {k: v for k, v in selectors.items() if v}
        self._changed, self._stop = changed, stop
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{list_call.__name__}", daemon=True)

    def start(self) -> WatchCache:
        self._thread.start()
        return self

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                while not self._stop.is_set():
                    version = self._watch(version)
            except KeyError:  # the client's handling of an ERROR event (410 Gone) with raw events
                continue
            except ApiException as err:
                if err.status != 410:  # 410 Gone: the resource version expired, list again
                    log.warning("watch of %s failed: %s", self._call.__name__, err.reason)
                    self._stop.wait(1.0)
            except Exception:  # the API server restarting, a reset connection: list again
                log.exception("watch of %s failed", self._call.__name__)
                self._stop.wait(1.0)

    def _list(self) -> str:
        response = self._call(**self._selector, _preload_content=False)
        doc = json.loads(response.data)
        with self._lock:
            self._objects = {_key(o): o for o in doc.get("items") or []}
        self.synced.set()
        self._changed.set()
        return str(doc["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        """Apply events from `version` on until the server ends the watch; the version to resume from."""
        stream = watch.Watch()
        for event in stream.stream(
            self._call,
            **self._selector,
            resource_version=version,
            timeout_seconds=WATCH_TIMEOUT_S,
            allow_watch_bookmarks=True,
            deserialize=False,
        ):
            if self._stop.is_set():
                stream.stop()
                return version
            kind, obj = event["type"], event["object"]  # deserialize=False: the object as sent
            version = obj["metadata"]["resourceVersion"]
            if kind == "BOOKMARK":
                continue
            with self._lock:
                if kind == "DELETED":
                    self._objects.pop(_key(obj), None)
                else:
                    self._objects[_key(obj)] = obj
            self._changed.set()
        return version
