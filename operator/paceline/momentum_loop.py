"""Asynchronous jobs: measured staleness → implicit momentum → explicit momentum patched into the PS shards.

Each resync reads every parameter-server shard's new updates (`GET /staleness?after=N`, exact τ per update),
feeds them to the job's `MomentumController` together with the workers' measured speeds, and when the policy
retunes, PUTs the new versioned explicit momentum to every shard (level-based: a shard that missed a version
gets it again on the next resync).
"""

from __future__ import annotations

import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field

from paceline.builders import hyperparameters_json
from paceline.momentum import MomentumController, MomentumDecision, MomentumSettings
from paceline.telemetry import http_json


@dataclass(kw_only=True)
class AsyncControl:
    """Per-job memory: the controller, how far each shard's update log was read, the version in force."""

    controller: MomentumController
    cursors: dict[int, int] = field(default_factory=dict)  # shard → next update index to read
    attempt: str = "0"  # the shards' update logs restart with every attempt
    version: int = 1  # hyperparameters version the PS shards started with (PACELINE_HYPERPARAMETERS)
    explicit: float | None = None
    status: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def create(*, settings: MomentumSettings, workers: int, initial_explicit: float) -> AsyncControl:
        """State for a job whose shards start with `initial_explicit` momentum."""
        controller = MomentumController.create(settings=settings, workers=workers)
        controller.current_explicit = initial_explicit
        return AsyncControl(controller=controller, explicit=initial_explicit)


def read_staleness(url: str, after: int) -> tuple[list[int], int] | None:
    """New τ values of one shard since update index `after`, and the next index; None if unreachable."""
    try:
        doc = http_json(f"{url}/staleness?after={after}")
    except (OSError, ValueError):
        return None
    return [int(u["staleness"]) for u in doc.get("updates", [])], int(doc.get("next", after))


def put_momentum(url: str, *, version: int, momentum: float) -> bool:
    """PUT a new explicit momentum to one shard; True when it holds that version (200, or 409 = already)."""
    body = hyperparameters_json(version=version, learning_rate=None, momentum=momentum)
    try:
        http_json(f"{url}/hyperparameters", method="PUT", body=body)
    except urllib.error.HTTPError as err:
        return err.code == 409
    except OSError:
        return False
    return True


def momentum_step(
    state: AsyncControl, *, shard_urls: Mapping[int, str], worker_speeds: Mapping[str, float]
) -> MomentumDecision | None:
    """Read staleness from every shard, decide, and push a retuned momentum; the decision when it applied."""
    for shard, url in shard_urls.items():
        read = read_staleness(url, state.cursors.get(shard, 0))
        if read is None:
            continue
        values, state.cursors[shard] = read
        state.controller.observe_staleness(values)
    if not worker_speeds:
        return None
    decision = state.controller.decide(worker_speeds=worker_speeds)
    state.status = decision.to_status()
    if not decision.apply:
        for url in shard_urls.values():  # level-based: a shard restarted or missed the last PUT
            put_momentum(url, version=state.version, momentum=state.explicit or decision.explicit)
        return None
    state.version += 1
    state.explicit = decision.explicit
    for url in shard_urls.values():
        put_momentum(url, version=state.version, momentum=decision.explicit)
    return decision
