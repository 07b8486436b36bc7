"""Small MLPs for classic-control environments, the actors' action choice, and parameters on the wire."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from .segment import FloatArray, IntArray

HIDDEN = 64


def mlp(inputs: int, outputs: int, *, hidden: int = HIDDEN) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, outputs)
    )


class ActorCritic(nn.Module):
    """PPO: a policy head (action logits) and a separate value network."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.policy = mlp(obs_dim, n_actions)
        self.value = mlp(obs_dim, 1)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.policy(obs)
        return out


class QNetwork(nn.Module):
    """DQN: one Q-value per action; `logits` are the Q-values (greedy acting takes their argmax)."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.q = mlp(obs_dim, n_actions)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.q(obs)
        return out


def sample_actions(logits: npt.NDArray[np.float32], rng: np.random.Generator) -> tuple[IntArray, FloatArray]:
    """Sample from softmax(logits) per row (Gumbel-max); returns actions and their log-probabilities."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    actions = np.argmax(log_probs + rng.gumbel(size=log_probs.shape), axis=1).astype(np.int64)
    return actions, log_probs[np.arange(len(actions)), actions].astype(np.float32)


def epsilon_greedy(
    q_values: npt.NDArray[np.float32], epsilon: float, rng: np.random.Generator
) -> tuple[IntArray, FloatArray]:
    """Greedy on Q with probability 1 - epsilon, else uniform; the log-probability of each choice."""
    n, actions_count = q_values.shape
    greedy = np.argmax(q_values, axis=1).astype(np.int64)
    explore = rng.random(n) < epsilon
    actions = np.where(explore, rng.integers(0, actions_count, size=n), greedy).astype(np.int64)
    probability = np.where(actions == greedy, 1 - epsilon + epsilon / actions_count, epsilon / actions_count)
    return actions, np.log(probability).astype(np.float32)


def encode_parameters(model: nn.Module, *, version: int, meta: dict[str, float] | None = None) -> bytes:
    """npz: every state_dict tensor plus `__version__` and scalar `__meta_<name>__` entries."""
    arrays: dict[str, Any] = {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}
    arrays.update({f"__meta_{k}__": np.float64(v) for k, v in (meta or {}).items()})
    arrays["__version__"] = np.int64(version)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_parameters(body: bytes) -> tuple[int, dict[str, torch.Tensor], dict[str, float]]:
    with np.load(io.BytesIO(body), allow_pickle=False) as data:
        version = int(data["__version__"])
        meta = {k[len("__meta_") : -2]: float(data[k]) for k in data.files if k.startswith("__meta_")}
        tensors = {k: torch.from_numpy(data[k].copy()) for k in data.files if not k.startswith("__")}
    return version, tensors, meta


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of equally shaped state dicts (model averaging across learners)."""
    return {name: torch.stack([s[name].float().cpu() for s in states]).mean(dim=0) for name in states[0]}
