"""Stage 2a — the checkpoint volume: the claim a job names must exist; a claim template becomes a PVC the
job owns. A missing claim keeps the job unplanned (nothing running is touched) until it appears."""

from __future__ import annotations

from typing import Any

from paceline import api
from paceline.builders import build_checkpoint_claim
from paceline.conditions import Condition
from paceline.controller.decide.model import Observed
from paceline.controller.decide.plan import Unplanned, job_ref
from paceline.reasons import ConditionType, Reason


def checkpoint_volume(obs: Observed, spec: api.JobSpec) -> Unplanned | list[dict[str, Any]]:
    """The PVC to create (if any), or why the job cannot be planned."""
    name = spec.checkpoint.claim(obs.job["metadata"]["name"])
    if name is None or obs.claims is None or name in obs.claims:
        return []
    if spec.checkpoint.claim_name is not None:
        namespace = obs.job["metadata"]["namespace"]
        message = (
            f"spec.checkpoint.claimName: PersistentVolumeClaim {name!r} does not exist in namespace "
            f"{namespace}; create it (ReadWriteMany when workers span nodes) or use volumeClaimTemplate"
        )
        condition = Condition(
            type=ConditionType.PLANNED, status=False, reason=Reason.CHECKPOINT_VOLUME_MISSING, message=message
        )
        return Unplanned(condition=condition)
    claim = build_checkpoint_claim(job_ref(obs.job), spec=spec)
    return [] if claim is None else [claim]
