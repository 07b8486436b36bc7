"""Bad TrainingJobs (the catalogue in paceline_dev.bad_specs): rejected by the API server (schema, CEL, field
validation) or refused by the operator with a condition and a Warning event, each with a message that says
what to fix; nothing is created for them."""

from __future__ import annotations

import copy

import pytest
from e2e_support import Kube, training_job

from paceline_dev import bad_specs
from paceline_dev.bad_specs import BAD_SPECS, SLEEP, BadSpec
from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("spec", BAD_SPECS, ids=[f"{s.refused_by}: {s.case}" for s in BAD_SPECS])
def test_refused_with_a_fix_it_message(cluster: LocalCluster, namespace: str, spec: BadSpec) -> None:
    verdict = bad_specs.judge(cluster, spec, namespace)
    assert verdict.refused, f"{spec.case}: expected {spec.message!r}; {verdict.said}"


def test_mode_is_immutable(kube: Kube, namespace: str) -> None:
    doc = training_job("fixed", command=SLEEP, replicas=(1, 1))
    assert kube.apply(doc, namespace).returncode == 0
    changed = copy.deepcopy(doc)
    changed["spec"]["mode"] = "Asynchronous"
    proc = kube.apply(changed, namespace)
    assert proc.returncode != 0 and "spec.mode is immutable" in proc.stderr
