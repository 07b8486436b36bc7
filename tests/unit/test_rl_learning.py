"""Reinforcement mode: advantages, the stopping rule, action sampling, parameters on the wire, averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paceline_worker.reinforcement.dqn import DqnHyperparameters, epsilon_at
from paceline_worker.reinforcement.models import (
    ActorCritic,
    average_state,
    decode_parameters,
    encode_parameters,
    epsilon_greedy,
    sample_actions,
)
from paceline_worker.reinforcement.ppo import gae
from paceline_worker.reinforcement.returns import ReturnWindow, StopReason, stop_reason


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value() -> None:
    rewards = np.array([[1.0, 1.0, 1.0]], np.float32)
    values = np.array([[0.5, 0.5, 0.5]], np.float32)
    next_values = np.array([[0.5, 0.5, 2.0]], np.float32)  # the batch's last step bootstraps from 2.0
    none = np.zeros((1, 3), bool)
    adv, targets = gae(
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminated=none,
        truncated=none,
        gamma=0.9,
        lam=1.0,
    )
    expected_return = 1 + 0.9 + 0.81 + 0.729 * 2.0
    assert adv[0, 0] == pytest.approx(expected_return - 0.5)
    assert targets[0, 0] == pytest.approx(expected_return)


def test_gae_does_not_bootstrap_a_terminated_step_but_does_a_truncated_one() -> None:
    rewards = np.ones((2, 2), np.float32)
    values = np.zeros((2, 2), np.float32)
    next_values = np.full((2, 2), 10.0, np.float32)
    terminated = np.array([[True, False], [False, False]])
    truncated = np.array([[False, False], [True, False]])
    adv, _ = gae(
        rewards=rewards,
        values=values,
        next_values=next_values,
        terminated=terminated,
        truncated=truncated,
        gamma=0.5,
        lam=1.0,
    )
    assert adv[0, 0] == pytest.approx(1.0)  # episode ended: no value after it, no recursion into step 1
    assert adv[1, 0] == pytest.approx(1.0 + 0.5 * 10.0)  # time limit: bootstrap, but stop the recursion


def test_target_return_stops_only_with_a_full_window() -> None:
    window = ReturnWindow(3)
    window.extend([500, 500])
    assert stop_reason(window, target_return=475, env_steps=10, max_env_steps=0) is None
    window.extend([430])
    assert window.mean == pytest.approx(476.67, abs=0.01)
    assert stop_reason(window, target_return=475, env_steps=10, max_env_steps=0) is StopReason.TARGET_RETURN
    window.extend([10])
    assert window.best == pytest.approx(476.67, abs=0.01)
    assert stop_reason(window, target_return=475, env_steps=10, max_env_steps=0) is None


def test_step_budget_stops_without_a_target() -> None:
    window = ReturnWindow(2)
    assert stop_reason(window, target_return=None, env_steps=99, max_env_steps=100) is None
    assert (
        stop_reason(window, target_return=None, env_steps=100, max_env_steps=100)
        is StopReason.ENV_STEP_BUDGET
    )


def test_sampled_actions_follow_the_softmax_and_report_their_log_probability() -> None:
    logits = np.tile(np.log(np.array([[0.2, 0.8]], np.float32)), (20000, 1))
    actions, logp = sample_actions(logits, np.random.default_rng(1))
    assert actions.mean() == pytest.approx(0.8, abs=0.02)
    np.testing.assert_allclose(logp, np.where(actions == 1, np.log(0.8), np.log(0.2)), rtol=1e-5)


def test_epsilon_greedy_explores_uniformly_with_probability_epsilon() -> None:
    q = np.tile(np.array([[0.0, 1.0, 0.0]], np.float32), (30000, 1))
    actions, logp = epsilon_greedy(q, 0.3, np.random.default_rng(2))
    assert (actions == 1).mean() == pytest.approx(0.7 + 0.1, abs=0.02)
    np.testing.assert_allclose(logp[actions == 1], np.log(0.8), rtol=1e-5)
    np.testing.assert_allclose(logp[actions == 0], np.log(0.1), rtol=1e-5)


def test_epsilon_decays_linearly_then_stays() -> None:
    hyper = DqnHyperparameters(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100)
    assert [epsilon_at(s, hyper) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_parameters_round_trip_with_version_and_metadata() -> None:
    model = ActorCritic(4, 2)
    version, state, meta = decode_parameters(encode_parameters(model, version=12, meta={"epsilon": 0.25}))
    assert version == 12 and meta == {"epsilon": 0.25}
    other = ActorCritic(4, 2)
    other.load_state_dict(state)
    obs = torch.randn(5, 4)
    torch.testing.assert_close(other.logits(obs), model.logits(obs))


def test_model_average_is_elementwise() -> None:
    a = {"w": torch.tensor([1.0, 2.0])}
    b = {"w": torch.tensor([3.0, 6.0])}
    torch.testing.assert_close(average_state([a, b])["w"], torch.tensor([2.0, 4.0]))
