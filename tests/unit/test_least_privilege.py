"""What the operator builds for authenticated control and least privilege: the job's token Secret (made once,
owned by the job), its read-only mount in every pod, the restricted security context, and pushes that bear
the token (against a real worker endpoint)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from jobs import PLAN, job

from paceline import api
from paceline.builders import build_capacity_pod, build_ps_pod, build_token_secret, build_worker_pod
from paceline.controller import apply as apply_module
from paceline.controller.decide import decide
from paceline.controller.decide.model import Decision, Observed
from paceline.controller.decide.plan import job_ref
from paceline_worker.assignment_store import AssignmentStore
from paceline_worker.control_auth import ControlAuth
from paceline_worker.http_server import HttpEndpoint, assignment_routes
from paceline_worker.wire import Assignment, Env

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
ASSIGNMENT = Assignment(version=1, batch_sizes=(56, 56, 16))


def _worker(tj: dict[str, Any] | None = None) -> dict[str, Any]:
    tj = tj or job()
    return build_worker_pod(
        job_ref(tj),
        spec=api.parse_spec(tj["spec"]),
        placement=PLAN.workers[0],
        world_size=3,
        attempt=0,
        plan_hash="h",
        assignment=ASSIGNMENT,
        port=29500,
        sharding="{}",
    )


def _ps() -> dict[str, Any]:
    tj = job(mode="Asynchronous")
    spec = api.parse_spec(tj["spec"])
    return build_ps_pod(job_ref(tj), spec=spec, shard=0, workers=2, attempt=0, plan_hash="h", momentum=0.5)


def test_the_token_secret_is_owned_by_the_job() -> None:
    secret = build_token_secret(job_ref(job()), token="t0k3n")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "demo-control-token"
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainingJob", "uid-1234", True)
    assert secret["stringData"] == {"token": "t0k3n"}
    assert secret["metadata"]["labels"][api.LABEL_ROLE] == api.ROLE_TOKEN


@pytest.mark.parametrize("build", [_worker, _ps])
def test_every_pod_mounts_the_token_read_only(build: Any) -> None:
    pod = build()
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == api.TOKEN_VOLUME]
    assert volume["secret"]["secretName"] == "demo-control-token"
    container = pod["spec"]["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == api.TOKEN_VOLUME]
    assert mount == {"name": api.TOKEN_VOLUME, "mountPath": api.TOKEN_MOUNT, "readOnly": True}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[Env.TOKEN_FILE] == f"{api.TOKEN_MOUNT}/{api.TOKEN_KEY}"
    assert "the token" not in str(pod)  # the token itself is never in a pod spec


def _restricted(pod: dict[str, Any]) -> None:
    """The restricted Pod Security Standard's checks, on a built pod."""
    spec = pod["spec"]
    ctx = spec["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == ctx["runAsGroup"] == api.POD_USER > 0
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        c = container["securityContext"]
        assert c["allowPrivilegeEscalation"] is False and c["capabilities"] == {"drop": ["ALL"]}
        assert c["runAsNonRoot"] is True
    for volume in spec.get("volumes") or []:  # restricted allows these volume types only
        assert set(volume) - {"name"} <= {"emptyDir", "secret", "persistentVolumeClaim", "configMap"}


@pytest.mark.parametrize("build", [_worker, _ps])
def test_worker_and_ps_pods_run_restricted_with_a_read_only_root(build: Any) -> None:
    pod = build()
    _restricted(pod)
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": api.TMP_VOLUME, "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": api.TMP_VOLUME, "emptyDir": {}} in pod["spec"]["volumes"]


def test_placeholders_run_restricted() -> None:
    _restricted(build_capacity_pod(job_ref(job()), name="demo-capacity-a100-0", pool="a100", gpus=1))


def test_the_templates_own_security_settings_win() -> None:
    tj = job()
    template = tj["spec"]["template"]["spec"]
    template["securityContext"] = {"runAsUser": 1234}
    template["containers"][0]["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"], "drop": ["ALL"]}}
    template["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/tmp"}]
    template["volumes"] = [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]
    pod = _worker(tj)
    assert pod["spec"]["securityContext"]["runAsUser"] == 1234
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert [m["mountPath"] for m in container["volumeMounts"]].count("/tmp") == 1  # theirs, not a second
    assert all(v["name"] != api.TMP_VOLUME for v in pod["spec"]["volumes"])


def _observe(**kw: Any) -> Observed:
    tj = job()
    return Observed(
        job=tj,
        spec=api.parsed(tj["spec"]),
        pods=[],
        service=None,
        control=None,
        now=T0,
        new_plan=PLAN,
        **kw,
    )


def test_the_secret_is_made_before_the_pods_when_there_is_none() -> None:
    created = decide(_observe(token=None, fresh_token="fresh")).create
    kinds = [o["kind"] for o in created]
    assert kinds[0] == "Secret" and kinds.count("Secret") == 1 and "Pod" in kinds
    assert created[0]["stringData"]["token"] == "fresh"


def test_an_existing_secret_is_never_replaced() -> None:
    created = decide(_observe(token="old", fresh_token=None)).create
    assert "Secret" not in [o["kind"] for o in created]
    assert "Secret" not in [o["kind"] for o in decide(_observe(token="old", fresh_token="new")).create]


@pytest.fixture
def rank0() -> Iterator[tuple[str, AssignmentStore]]:
    store = AssignmentStore(Assignment(version=1, batch_sizes=(4, 4)), rank=0)
    server = HttpEndpoint(
        assignment_routes(store, dict), host="127.0.0.1", port=0, auth=ControlAuth(b"job-token")
    ).start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}/assignment", store
    finally:
        server.stop()


def test_apply_pushes_with_the_token_and_notices_a_refusal(rank0: tuple[str, AssignmentStore]) -> None:
    url, store = rank0
    meta = {"metadata": {"name": "demo", "namespace": "ml", "generation": 1}}
    push = Decision(push=(url, Assignment(version=2, batch_sizes=(3, 5))))
    assert not apply_module.apply(meta, push, token=None).token_refused
    assert store.pending is None  # no token known yet: nothing pushed
    assert apply_module.apply(meta, push, token="stale-token").token_refused
    assert store.pending is None
    assert not apply_module.apply(meta, push, token="job-token").token_refused
    assert store.pending is not None and store.pending.version == 2
