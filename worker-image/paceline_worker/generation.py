"""A generation of a job: which pods train together, in what order, under which assignment and plan.

The operator decides a new generation when the job grows or shrinks; each surviving pod's launcher receives
it (PUT /generation) and restarts its ranks in place with it, so surviving pods are never recreated. Pure.

Wire form:

    {"generation": 3, "nnodes": 2, "nodeRank": 1, "masterAddr": "job-worker-0.job.ns.svc.cluster.local",
     "masterPort": 29531, "assignment": {"version": 9, "batchSizes": [40, 24]},
     "plan": {"tensorParallel": 1, "modules": {}}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class GenerationError(ValueError):
    """A malformed generation; the message says which field."""


@dataclass(frozen=True, kw_only=True)
class Generation:
    generation: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    assignment: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The launcher (torchrun) and worker variables of this generation."""
        env = {
            "PACELINE_GENERATION": str(self.generation),
            "PET_NNODES": str(self.nnodes),
            "PET_NODE_RANK": str(self.node_rank),
            "PET_MASTER_ADDR": self.master_addr,
            "PET_MASTER_PORT": str(self.master_port),
        }
        if self.assignment:
            env["PACELINE_ASSIGNMENT"] = json.dumps(self.assignment, separators=(",", ":"))
        if self.plan:
            env["PACELINE_PLAN"] = json.dumps(self.plan, separators=(",", ":"))
        return env

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "nnodes": self.nnodes,
            "nodeRank": self.node_rank,
            "masterAddr": self.master_addr,
            "masterPort": self.master_port,
            "assignment": dict(self.assignment),
            "plan": dict(self.plan),
        }


def _int(doc: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int:
    value = doc.get(key)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise GenerationError(f"{key} must be an integer {bound}, got {value!r}")
    return value


def generation_from_mapping(doc: Mapping[str, Any]) -> Generation:
    """Validate the wire form."""
    nnodes = _int(doc, "nnodes", 1)
    master = doc.get("masterAddr")
    if not isinstance(master, str) or not master:
        raise GenerationError("masterAddr must be a non-empty host name or address")
    for key in ("assignment", "plan"):
        if not isinstance(doc.get(key) or {}, Mapping):
            raise GenerationError(f"{key} must be an object")
    return Generation(
        generation=_int(doc, "generation", 0),
        nnodes=nnodes,
        node_rank=_int(doc, "nodeRank", 0, nnodes - 1),
        master_addr=master,
        master_port=_int(doc, "masterPort", 1, 65535),
        assignment=dict(doc.get("assignment") or {}),
        plan=dict(doc.get("plan") or {}),
    )


def parse_generation(text: str | bytes) -> Generation:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GenerationError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise GenerationError("a generation must be a JSON object")
    return generation_from_mapping(doc)


def generation_from_env(env: Mapping[str, str]) -> Generation:
    """The pod's first generation, from the variables the operator put in its spec."""
    try:
        return Generation(
            generation=int(env.get("PACELINE_GENERATION") or 0),
            nnodes=int(env.get("PET_NNODES") or 1),
            node_rank=int(env.get("PET_NODE_RANK") or 0),
            master_addr=env.get("PET_MASTER_ADDR") or "127.0.0.1",
            master_port=int(env.get("PET_MASTER_PORT") or 29500),
        )
    except ValueError as exc:
        raise GenerationError(f"launcher environment: {exc}") from exc
