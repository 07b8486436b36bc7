"""List and watch pods in a thread of their own and hand what it sees to the event loop: a listing as a whole
(`on_listing(items, namespace)`), then the watch's events in batches (`on_events(events)`), both called in
the loop. A broken watch resumes from the last resource version seen; an expired one (410) lists again."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from paceline.adapters import kube

log = logging.getLogger("paceline.pods")

RETRY_S = (0.5, 1.0, 2.0, 5.0)  # waits after consecutive failures, the last one repeated

Listing = Callable[[list[dict[str, Any]], str | None], None]
Events = Callable[[list[tuple[str, Mapping[str, Any]]]], None]


class PodWatch:
    """One scope's list-and-watch (a namespace, or the whole cluster when `namespace` is None)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_listing: Listing,
        on_events: Events,
        namespace: str | None = None,
        resume_from: str | None = None,
    ) -> None:
        self.namespace = namespace
        self._loop, self._on_listing, self._on_events = loop, on_listing, on_events
        self._stopped = threading.Event()
        self._stream: kube.PodStream | None = None
        self._version = resume_from  # the resource version the watch resumes from; None: list first
        where = namespace or "all-namespaces"
        self._thread = threading.Thread(target=self._run, name=f"paceline-pods-{where}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if self._version is None:
                    items, self._version = kube.list_all_pods(self.namespace)
                    self._hand(self._on_listing, items, self.namespace)
                self._follow(self._version)
                failures = 0
            except kube.Expired:
                self._version = None  # list again: pods deleted meanwhile are missing from the listing
            except Exception as err:  # the API server restarting, a broken connection, ...
                if self._stopped.is_set():
                    return
                log.warning("pod watch (%s): %s; resuming", self.namespace or "cluster", err)
                while not self._stopped.wait(RETRY_S[min(failures, len(RETRY_S) - 1)]):
                    failures += 1
                    if kube.api_ready():  # not before: a restarted API server refuses until it read RBAC
                        break

    def _follow(self, version: str) -> None:
        """Watch from `version` until the server ends the request, keeping the last version seen (bookmarks
        included) to resume from."""
        self._stream = kube.PodStream(version, self.namespace)
        try:
            for batch in self._stream.batches():
                events: list[tuple[str, Mapping[str, Any]]] = []
                for event in batch:
                    obj = event.get("object") or {}
                    self._version = (obj.get("metadata") or {}).get("resourceVersion") or self._version
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        events.append((event["type"], obj))
                if events:
                    self._hand(self._on_events, events)
                if self._stopped.is_set():
                    break
        finally:
            self._stream.close()
            self._stream = None

    def _hand(self, callback: Callable[..., None], *args: Any) -> None:
        if not self._stopped.is_set():
            self._loop.call_soon_threadsafe(callback, *args)
