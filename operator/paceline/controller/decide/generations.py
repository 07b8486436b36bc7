"""Stage 3c — generations: the pods a resize kept are told their new generation (rank, world, rendezvous,
assignment, plan) over their launcher's `PUT /generation`; their pods stay, and so do their ranks' processes
when the plan splits no module (they regroup at a step boundary), else the ranks restart in the pod.

Level-based: every kept pod that was made in an earlier generation and has not acknowledged this one is
pushed again on each pass; a 409 (it already holds it) counts as acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from paceline import api
from paceline.controller.decide.children import Children, created_generation
from paceline.controller.decide.model import GenerationPut
from paceline.controller.decide.plan import Planned
from paceline.plan_types import sharding_json
from paceline_worker.wire import LAUNCHER_PORT, Generation, Route


def _ip(pod: Mapping[str, Any]) -> str | None:
    status = pod.get("status") or {}
    return str(status["podIP"]) if status.get("phase") == "Running" and status.get("podIP") else None


def generation_puts(
    job: Mapping[str, Any], planned: Planned, children: Children, acked: Mapping[str, int]
) -> tuple[list[GenerationPut], bool]:
    """What to push to the kept pods (`acked`: pod uid → generation it acknowledged), and whether some
    push must wait (rank 0, the rendezvous host, has no address yet)."""
    members = planned.members
    behind = {
        rank: pod
        for rank, pod in children.workers.items()
        if created_generation(pod) < members.generation
        and acked.get(str(pod["metadata"]["uid"]), -1) < members.generation
    }
    if not behind:
        return [], False
    master = _ip(children.workers[0]) if 0 in children.workers else None
    if master is None:
        return [], True
    port = api.master_port(str(job["metadata"]["uid"]), members.generation)
    assignment = json.loads(planned.assignment.to_json())
    plan = json.loads(sharding_json(planned.plan))
    puts, waiting = [], False
    for rank, pod in sorted(behind.items()):
        ip = _ip(pod)
        if ip is None:
            waiting = True
            continue
        generation = Generation(
            generation=members.generation,
            nnodes=len(planned.plan.workers),
            node_rank=rank,
            master_addr=master,
            master_port=port,
            assignment=assignment,
            plan=plan,
        )
        puts.append(
            GenerationPut(
                pod=str(pod["metadata"]["uid"]),
                url=f"http://{ip}:{LAUNCHER_PORT}{Route.GENERATION}",
                body=json.dumps(generation.to_json_dict()),
                generation=members.generation,
            )
        )
    return puts, waiting
