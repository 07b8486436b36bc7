"""kopf handlers: thin triggers for the one level-based reconcile path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from paceline import api
from paceline.reconcile import forget, reconcile

RESYNC_SECONDS = 2.0
log = logging.getLogger("paceline.handlers")
_known: set[tuple[str, str]] = set()
_tasks: list[asyncio.Task[None]] = []


async def _resync_loop() -> None:
    """Periodic resync of every known job (backoff deadlines, missed events, telemetry); no finalizer."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        for namespace, name in sorted(_known):
            try:
                await loop.run_in_executor(None, reconcile, namespace, name)
            except Exception:  # one job's failure must not stop the others' resync
                log.exception("resync of %s/%s failed", namespace, name)


@kopf.on.startup()
async def start_resync(**_: Any) -> None:
    """Start the resync loop."""
    _tasks.append(asyncio.create_task(_resync_loop()))


@kopf.on.cleanup()
async def stop_resync(**_: Any) -> None:
    """Stop the resync loop."""
    for task in _tasks:
        task.cancel()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's own bookkeeping out of the way: annotations under paceline.dev, no event spam."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.paceline.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kopf.paceline.dev")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.execution.max_workers = 8


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
def on_job_event(namespace: str | None, name: str, type: str, **_: Any) -> None:
    """Any change to a TrainingJob (including our own status writes, which converge to no-ops)."""
    if namespace is None:  # TrainingJobs are namespaced; kopf types allow None for cluster-scoped kinds
        return
    if type == "DELETED":
        _known.discard((namespace, name))
        forget(namespace, name)
        return
    _known.add((namespace, name))
    reconcile(namespace, name)


@kopf.on.event("v1", "pods", labels={api.LABEL_JOB: kopf.PRESENT, api.LABEL_MANAGED_BY: api.MANAGED_BY})
def on_pod_event(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
    """A worker pod changed: reconcile its job."""
    if namespace is not None:
        reconcile(namespace, labels[api.LABEL_JOB])
