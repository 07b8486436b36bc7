"""A trajectory batch: `envs × steps` transitions from one actor under one policy version; its npz form."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class SegmentError(ValueError):
    """A trajectory batch that does not decode or whose arrays disagree in shape."""


@dataclass(frozen=True, kw_only=True)
class Segment:
    actor: int
    version: int  # the policy version that chose every action in it
    obs: FloatArray  # (envs, steps, obs_dim)
    actions: IntArray  # (envs, steps)
    rewards: FloatArray  # (envs, steps)
    next_obs: FloatArray  # (envs, steps, obs_dim): the observation after the step (before any reset)
    terminated: BoolArray  # (envs, steps)
    truncated: BoolArray  # (envs, steps)
    logp: FloatArray  # (envs, steps): log-probability of the action under the behaviour policy
    episode_returns: FloatArray  # returns of the episodes that ended in this batch

    @property
    def samples(self) -> int:
        return int(self.actions.size)

    def validate(self) -> None:
        shape = self.actions.shape
        if len(shape) != 2:
            raise SegmentError(f"actions must be (envs, steps), got {shape}")
        for name in ("rewards", "terminated", "truncated", "logp"):
            if getattr(self, name).shape != shape:
                raise SegmentError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        for name in ("obs", "next_obs"):
            array = getattr(self, name)
            if array.ndim != 3 or array.shape[:2] != shape:
                raise SegmentError(f"{name} has shape {array.shape}, expected {shape} + (obs_dim,)")


_ARRAYS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "logp", "episode_returns")


def encode_segment(segment: Segment) -> bytes:
    buffer = io.BytesIO()
    arrays = {name: getattr(segment, name) for name in _ARRAYS}
    np.savez(buffer, actor=np.int64(segment.actor), version=np.int64(segment.version), **arrays)
    return buffer.getvalue()


def decode_segment(body: bytes) -> Segment:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            segment = Segment(
                actor=int(data["actor"]),
                version=int(data["version"]),
                obs=data["obs"].astype(np.float32),
                actions=data["actions"].astype(np.int64),
                rewards=data["rewards"].astype(np.float32),
                next_obs=data["next_obs"].astype(np.float32),
                terminated=data["terminated"].astype(bool),
                truncated=data["truncated"].astype(bool),
                logp=data["logp"].astype(np.float32),
                episode_returns=data["episode_returns"].astype(np.float32),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise SegmentError(f"not a trajectory batch: {exc}") from exc
    segment.validate()
    return segment
