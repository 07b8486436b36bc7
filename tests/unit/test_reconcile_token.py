"""When a pass reads the job's token Secret first: not for a job the operator has made nothing for yet."""

from __future__ import annotations

from typing import Any

import pytest

from paceline.controller.reconcile import Snapshot, nothing_made_yet

JOB: dict[str, Any] = {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}, "spec": {}}
CONTROL = {"metadata": {"name": "j-control"}, "data": {}}
POD = {"metadata": {"name": "j-worker-0"}, "status": {"phase": "Pending"}}


def test_a_brand_new_job_skips_the_read() -> None:
    assert nothing_made_yet(Snapshot(job=JOB, pods=[], service=None, control=None))


@pytest.mark.parametrize(
    "made",
    [
        {"job": {**JOB, "status": {"phase": "Pending"}}},
        {"control": CONTROL},
        {"lost_control": CONTROL},
        {"service": {"metadata": {"name": "j"}}},
        {"pods": [POD]},
    ],
    ids=["status", "control", "lost-control", "service", "pods"],
)
def test_anything_made_for_the_job_means_its_secret_is_read(made: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"job": JOB, "pods": [], "service": None, "control": None, **made}
    assert not nothing_made_yet(Snapshot(**fields))
