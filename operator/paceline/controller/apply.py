"""Apply: carry out a decision — creates and patches, deletes and the pushes to workers (`apply`); then
one status write, skipped when nothing changed, and the events (`report`). It never decides anything: a
pod the API server refuses is reported back (`Applied.rejected`) for the next pass to decide about."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from paceline.adapters import kube, workers
from paceline.controller.decide.model import Decision, Event, Rejection

log = logging.getLogger("paceline.apply")
T = TypeVar("T")

# A pass creates its pods side by side, the way Kubernetes' own ReplicaSet and Job controllers do: one
# after another, each create waits out a full round trip, and 16 of them make a job wait 16 round trips.
# The pool is the whole operator's: at most this many pod creates are in flight at once.
POD_CREATES_IN_FLIGHT = 16
REFUSED = (401, 403)  # a worker did not take the control token
_creates = ThreadPoolExecutor(max_workers=POD_CREATES_IN_FLIGHT, thread_name_prefix="paceline-create")


@dataclass(kw_only=True)
class Applied:
    """What the API server answered: the objects as written, for the cache to run ahead of the watch."""

    created: list[dict[str, Any]] = field(default_factory=list)  # as sent (the watch brings uids)
    control: dict[str, Any] | None = None  # after a control ConfigMap patch
    deleted: list[str] = field(default_factory=list)
    rejected: Rejection | None = None
    generations_acked: dict[str, int] = field(default_factory=dict)  # pod uid → generation it now holds
    token_refused: bool = False  # a worker refused the control token (401/403): read the Secret again


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge patch from `old` to `new` status (removed keys set to None); empty when nothing changed."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def apply(job: Mapping[str, Any], decision: Decision, *, token: str | None = None) -> Applied:
    """Carry out `decision`'s objects for `job` (as observed): creates, patches, deletes, then the pushes to
    workers, bearing the job's control `token` (none known yet: no push this pass). The status and the
    events follow separately (`report`), after the objects they describe."""
    meta = job["metadata"]
    ns, name = meta["namespace"], meta["name"]
    applied = Applied()
    if decision.patch_control is not None:  # the plan and membership first: pods made below belong to it
        applied.control = kube.patch_configmap(decision.patch_control)
    # what pods refer to (token Secret, control ConfigMap, Service, claims) first, side by side: none of
    # them refers to another, and one round trip instead of one each keeps a new job's pods from waiting
    side_by_side(lambda obj: _create(obj, meta, applied), [o for o in decision.create if o["kind"] != "Pod"])
    pods = [obj for obj in decision.create if obj["kind"] == "Pod"]
    if applied.rejected is None:
        side_by_side(lambda pod: _create(pod, meta, applied), pods)
    for pod in decision.delete_pods:
        kube.delete_pod(ns, pod)
        applied.deleted.append(pod)
    if applied.created or applied.deleted:
        made = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in applied.created) or "nothing"
        log.info("%s/%s: created %s; deleted %s", ns, name, made, ", ".join(applied.deleted) or "nothing")
    if applied.rejected is None and token is not None:
        applied.token_refused = _push(ns, name, decision, token)
        applied.generations_acked, refused = _push_generations(ns, name, decision, token)
        applied.token_refused |= refused
    elif applied.rejected is None and (decision.push or decision.momentum_put or decision.generation_puts):
        log.info("%s/%s: the control token is not in the cache yet; pushing next pass", ns, name)
    return applied


def side_by_side(create: Callable[[Mapping[str, Any]], T], objs: Sequence[Mapping[str, Any]]) -> list[T]:
    """`create` for every object, at once in the operator's create pool; the answers in order (the first
    error is raised once every create has finished)."""
    futures = [_creates.submit(create, obj) for obj in objs]
    wait(futures)
    return [f.result() for f in futures]


def _create(obj: Mapping[str, Any], job_meta: Mapping[str, Any], applied: Applied) -> bool:
    """Create one object and note it in `applied`; False (and `applied.rejected` set) when the API server
    refuses it as invalid. Safe from several threads at once (list appends, one assignment)."""
    try:
        created = kube.create(obj)
    except kube.Rejected as err:
        generation = int(job_meta.get("generation") or 0)
        applied.rejected = Rejection(generation=generation, pod=obj["metadata"]["name"], message=str(err))
        return False
    if created:
        applied.created.append(dict(obj))
    return True


def report(
    job: Mapping[str, Any], status: Mapping[str, Any] | None, events: Sequence[Event]
) -> dict[str, Any] | None:
    """Write the status (once, and only what changed against the job as observed) and emit the events;
    returns the job as written, or None when nothing was written."""
    meta = job["metadata"]
    written = None
    if status is not None:
        patch = status_patch(job.get("status") or {}, status)
        if patch:
            written = kube.patch_job_status(meta["namespace"], meta["name"], patch)
    for event in events:
        kube.emit_event(job, type_=event.type, reason=str(event.reason), message=event.message)
    return written


def _push_generations(ns: str, name: str, decision: Decision, token: str) -> tuple[dict[str, int], bool]:
    """PUT each kept pod its new generation; the pods that hold it now (accepted, or had it already), and
    whether a launcher refused the token."""
    acked, refused = {}, False
    for put in decision.generation_puts:
        try:
            code = workers.put_json(put.url, put.body, token=token, timeout_s=2.0)
        except OSError as err:  # the launcher is not listening (yet): the next pass pushes again
            log.info("%s/%s: generation %d to %s failed: %s", ns, name, put.generation, put.url, err)
            continue
        if code in (202, 409):
            acked[put.pod] = put.generation
        refused |= code in REFUSED
    if acked:
        log.info("%s/%s: %d pod(s) acknowledged generation %d", ns, name, len(acked), max(acked.values()))
    return acked, refused


def _push(ns: str, name: str, decision: Decision, token: str) -> bool:
    """Hand the workers and shards what the decision says they should hold (level-based: repeated until
    they hold it); whether rank 0 refused the token."""
    refused = False
    if decision.push is not None:
        url, assignment = decision.push
        try:
            refused = workers.put_json(url, assignment.to_json(), token=token) in REFUSED
        except OSError as err:  # rank 0 not listening yet: the next pass pushes again
            log.info("push of assignment v%d to %s/%s rank 0 failed: %s", assignment.version, ns, name, err)
    if decision.momentum_put is not None:
        put = decision.momentum_put
        for url in put.urls:
            workers.put_momentum(url, token=token, version=put.version, momentum=put.momentum)
    return refused
