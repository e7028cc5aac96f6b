"""The tabular learners of chapter 02, checked against hand computations: history keys, the REINFORCE
step on a table of logits, the Q-learning step, count models and finite-horizon evaluation."""
from __future__ import annotations

import numpy as np
import pytest

from seqrl.rl.tabular import (
    Episodes,
    HistoryKeys,
    ObservationKeys,
    QTable,
    SoftmaxPolicyTable,
    evaluate_finite_horizon,
    fit_transition_model,
    q_learning_update,
    reinforce_update,
    train_reinforce,
)


def episodes(keys, actions, rewards, next_keys, terminated, mask=None) -> Episodes:
    keys = np.atleast_2d(np.asarray(keys, dtype=np.int64))
    mask = np.ones(keys.shape, dtype=bool) if mask is None else np.atleast_2d(np.asarray(mask, dtype=bool))
    return Episodes(keys, np.atleast_2d(np.asarray(actions, dtype=np.int64)), np.atleast_2d(np.asarray(rewards, dtype=float)),
                    np.atleast_2d(np.asarray(next_keys, dtype=np.int64)), np.atleast_2d(np.asarray(terminated, dtype=bool)), mask)


# ---------------------------------------------------------------------------------------------
# Keys


def test_observation_keys_are_the_observations():
    encoder = ObservationKeys(3)
    assert encoder.n_keys == 3
    assert encoder.reset(np.array([2, 0])).tolist() == [2, 0]
    assert encoder.step(np.array([2, 0]), np.array([1, 1]), np.array([1, 1])).tolist() == [1, 1]
    with pytest.raises(ValueError, match="n_observations"):
        ObservationKeys(0)


def test_history_keys_give_one_key_per_history_shared_across_episodes():
    encoder = HistoryKeys(n_actions=2, n_observations=2)
    roots = encoder.reset(np.array([0, 0, 0, 1]))
    assert roots.tolist() == [0, 0, 0, 1] and encoder.n_keys == 2
    children = encoder.step(roots, np.array([1, 1, 0, 1]), np.array([0, 0, 0, 0]))
    assert children[0] == children[1] != children[2]  # same history, same key; a different action, a new one
    assert children[3] not in children[:3]  # a different first observation is a different history
    assert encoder.n_keys == 5 and encoder.depth(children).tolist() == [1, 1, 1, 1]
    grandchildren = encoder.step(children[:1], np.array([0]), np.array([1]))
    assert encoder.path(int(grandchildren[0])) == [(1, 0), (0, 1)]
    again = encoder.step(encoder.step(encoder.reset(np.array([0])), np.array([1]), np.array([0])), np.array([0]), np.array([1]))
    assert again.tolist() == grandchildren.tolist() and encoder.n_keys == 6


def test_history_keys_grow_past_their_initial_capacity_and_validate():
    encoder = HistoryKeys(2, 1)
    keys = encoder.reset(np.zeros(1, dtype=int))
    for t in range(1500):  # a path of 1500 actions: 1501 nodes
        keys = encoder.step(keys, np.array([t % 2]), np.array([0]))
    assert encoder.n_keys == 1501 and encoder.depth(keys)[0] == 1500
    assert [a for a, _ in encoder.path(int(keys[0]))][:4] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="actions"):
        encoder.step(keys, np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="keys"):
        encoder.step(np.array([5000]), np.array([0]), np.array([0]))


# ---------------------------------------------------------------------------------------------
# REINFORCE on a table of logits


def test_reinforce_step_matches_the_hand_computed_gradient():
    # One episode on one key: actions right, left; rewards -1, -1. G = (-2, -1), b = -1.5,
    # G - b = (-0.5, 0.5). At theta = 0, d log pi(right)/d theta = 0.5, d log pi(left)/d theta = -0.5,
    # so dL/dtheta = -(1/2) * (-0.5 * 0.5 + 0.5 * -0.5) = 0.25 and theta <- 0 - alpha * 0.25.
    policy = SoftmaxPolicyTable(ObservationKeys(1))
    batch = episodes([0, 0], [1, 0], [-1.0, -1.0], [0, 0], [False, True])
    reinforce_update(policy, batch, learning_rate=2.0)
    assert policy.logits.tolist() == pytest.approx([-0.5])


def test_reinforce_step_scatters_each_steps_gradient_to_its_key_and_ignores_padding():
    policy = SoftmaxPolicyTable(ObservationKeys(3))
    # two episodes, the second padded; keys differ per step. Padding carries key 2 and must not move it.
    batch = episodes([[0, 1], [1, 2]], [[1, 1], [0, 0]], [[-1.0, -1.0], [-1.0, 0.0]], [[1, 1], [1, 2]],
                     [[False, True], [True, False]], mask=[[True, True], [True, False]])
    # G = [[-2, -1], [-1, pad]], b = mean(-2, -1, -1) = -4/3; M = 3 real steps.
    advantages = {(0, 0): -2 + 4 / 3, (0, 1): -1 + 4 / 3, (1, 0): -1 + 4 / 3}
    expected = np.zeros(3)
    expected[0] -= advantages[(0, 0)] * 0.5 / 3  # key 0, right
    expected[1] -= advantages[(0, 1)] * 0.5 / 3  # key 1, right
    expected[1] -= advantages[(1, 0)] * -0.5 / 3  # key 1, left
    reinforce_update(policy, batch, learning_rate=1.0)
    assert policy.logits == pytest.approx(-expected)
    assert policy.logits[2] == 0.0


def test_reinforce_rejects_bad_inputs_and_is_deterministic_given_the_seed():
    policy = SoftmaxPolicyTable(ObservationKeys(1))
    with pytest.raises(ValueError, match="learning_rate"):
        reinforce_update(policy, episodes([0], [1], [-1.0], [0], [True]), learning_rate=0.0)
    with pytest.raises(ValueError, match="no real steps"):
        reinforce_update(policy, episodes([0], [1], [0.0], [0], [False], mask=[False]), learning_rate=1.0)

    def sample(policy_fn, encoder, n, rng):  # a one-step bandit: right pays 0, left pays -1
        keys = encoder.reset(np.zeros(n, dtype=int))[:, None]
        actions = (rng.random((n, 1)) < policy_fn(keys[:, 0])[:, None]).astype(int)
        return episodes(keys, actions, actions - 1.0, keys, np.ones((n, 1), dtype=bool))

    runs = [SoftmaxPolicyTable(ObservationKeys(1)) for _ in range(2)]
    for run in runs:
        train_reinforce(sample, run, 30, 64, 5.0, seed=3)
    assert runs[0].logits.tolist() == runs[1].logits.tolist() and runs[0].probs(np.array([0]))[0] > 0.9


# ---------------------------------------------------------------------------------------------
# Q-learning


def test_q_learning_step_matches_the_hand_computed_targets():
    q = QTable(ObservationKeys(2), n_actions=2, initial_value=0.0)
    q.values[1] = [-4.0, -2.0]
    # step 0: (key 0, right) -> key 1, not terminal: target -1 + max(-4, -2) = -3
    # step 1: (key 1, left)  -> terminal: target -1
    batch = episodes([0, 1], [1, 0], [-1.0, -1.0], [1, 0], [False, True])
    q_learning_update(q, batch, learning_rate=0.5)
    assert q.values[0].tolist() == [0.0, -1.5]  # 0 + 0.5 * (-3 - 0)
    assert q.values[1].tolist() == [-2.5, -2.0]  # -4 + 0.5 * (-1 + 4)


def test_q_learning_averages_td_errors_of_a_shared_pair_and_skips_padding():
    q = QTable(ObservationKeys(1))
    batch = episodes([[0, 0], [0, 0]], [[1, 1], [1, 1]], [[-1.0, -1.0], [-3.0, 5.0]], [[0, 0], [0, 0]],
                     [[True, False], [True, False]], mask=[[True, False], [True, False]])
    q_learning_update(q, batch, learning_rate=1.0)
    assert q.values[0].tolist() == [0.0, -2.0]  # mean of the two terminal targets -1, -3; padding ignored


def test_greedy_and_epsilon_greedy_policies():
    q = QTable(ObservationKeys(3))
    q.values[:] = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]
    keys = np.arange(3)
    assert q.greedy_actions(keys).tolist() == [1, 0, 1]  # ties go to the highest index
    assert q.epsilon_greedy_probs(keys, 0.2).tolist() == pytest.approx([0.9, 0.1, 0.5])
    with pytest.raises(ValueError, match="epsilon"):
        q.epsilon_greedy_probs(keys, 1.5)
    with pytest.raises(ValueError, match="learning_rate"):
        q_learning_update(q, episodes([0], [1], [-1.0], [0], [True]), learning_rate=0.0)


def test_tables_grow_with_the_keys_of_a_history_encoder():
    encoder = HistoryKeys(2, 1)
    policy, q = SoftmaxPolicyTable(encoder, initial_logit=0.3), QTable(encoder, initial_value=-1.0)
    keys = encoder.reset(np.zeros(1, dtype=int))
    for _ in range(40):
        keys = encoder.step(keys, np.array([1]), np.array([0]))
    assert policy.logits.shape == (41,) and np.all(policy.logits == 0.3)
    assert q.values.shape == (41, 2) and np.all(q.values == -1.0)


# ---------------------------------------------------------------------------------------------
# Count models and exact evaluation


def test_count_model_is_the_empirical_frequency_and_uniform_where_unseen():
    transitions, counts = fit_transition_model([0, 0, 0, 0, 1], [1, 1, 1, 0, 0], [0, 1, 1, 0, 1], n_keys=3, n_actions=2)
    assert transitions[1, 0].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert transitions[0, 0].tolist() == [1.0, 0.0, 0.0] and transitions[0, 1].tolist() == [0.0, 1.0, 0.0]
    assert transitions[1, 2].tolist() == pytest.approx([1 / 3] * 3)  # never seen: uniform
    assert counts.tolist() == [[1, 3], [1, 0], [0, 0]]
    with pytest.raises(ValueError, match="next_keys"):
        fit_transition_model([0], [0], [3], n_keys=3, n_actions=1)


def test_finite_horizon_evaluation_of_a_geometric_wait():
    # one state that reaches an absorbing goal with probability q per step, reward -1 per step:
    # value within H steps = -(1 - (1-q)^H) / q, absorption probability 1 - (1-q)^H
    q, horizon = 0.2, 7
    transitions = np.array([[[1 - q, q], [0.0, 1.0]]])
    rewards = np.array([[-1.0], [0.0]])
    values, absorbed = evaluate_finite_horizon(transitions, rewards, np.ones((2, 1)), horizon, np.array([False, True]))
    assert values[0] == pytest.approx(-(1 - (1 - q) ** horizon) / q)
    assert absorbed.tolist() == pytest.approx([1 - (1 - q) ** horizon, 1.0])
    batch = np.ones((5, 2, 1))  # a batch of policies gives a batch of values
    assert evaluate_finite_horizon(transitions, rewards, batch, horizon, np.array([False, True]))[0].shape == (5, 2)
    with pytest.raises(ValueError, match="policy"):
        evaluate_finite_horizon(transitions, rewards, np.full((2, 1), 0.5), horizon, np.array([False, True]))
