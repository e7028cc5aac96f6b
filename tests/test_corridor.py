"""Claims of chapter 02 about the short corridor with switched actions (Sutton & Barto 2018, Ex. 13.1):
the exact values, the environment and simulator, and what each learner does on observations and on
histories."""
from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest

from seqrl.pomdp.corridor import (
    CORRIDOR,
    GOAL,
    GOAL_STATE,
    LEFT,
    NEXT_STATE,
    OPTIMAL_MDP_VALUE,
    OPTIMAL_MEMORYLESS_VALUE,
    OPTIMAL_P_RIGHT,
    RIGHT,
    ShortCorridorEnv,
    corridor_model,
    memoryless_goal_probability,
    memoryless_value,
    rollout,
)
from seqrl.rl.tabular import (
    HistoryKeys,
    ObservationKeys,
    QTable,
    SoftmaxPolicyTable,
    evaluate_finite_horizon,
    fit_transition_model,
    train_q_learning,
    train_reinforce,
)

H = 100


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def constant(p: float):
    return lambda keys: np.full(len(keys), p)


def step_size(k: int) -> float:
    return 2.0 / (1.0 + k / 10.0)


# ---------------------------------------------------------------------------------------------
# Exact values


def test_the_middle_cell_reverses_the_actions():
    assert NEXT_STATE[0].tolist() == [0, 1]  # left bumps into the wall, right moves right
    assert NEXT_STATE[1].tolist() == [2, 0]  # reversed: left moves right, right moves left
    assert NEXT_STATE[2].tolist() == [1, GOAL_STATE]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 2 - math.sqrt(2), 0.9])
def test_closed_form_solves_the_bellman_equations(p):
    # v = r + P v on the three cells, solved as a linear system
    transitions = np.zeros((3, 3))
    for cell in range(3):
        for action, prob in ((LEFT, 1 - p), (RIGHT, p)):
            nxt = NEXT_STATE[cell, action]
            if nxt != GOAL_STATE:
                transitions[cell, nxt] += prob
    values = np.linalg.solve(np.eye(3) - transitions, -np.ones(3))
    assert values[0] == pytest.approx(float(memoryless_value(p)), rel=1e-12)
    assert values[0] == pytest.approx(-2 * (2 - p) / (p * (1 - p)), rel=1e-12)


def test_the_best_memoryless_policy_is_stochastic_two_minus_root_two():
    grid = np.linspace(0.001, 0.999, 99_801)
    values = memoryless_value(grid)
    assert grid[np.argmax(values)] == pytest.approx(2 - math.sqrt(2), abs=1e-4)
    assert OPTIMAL_MEMORYLESS_VALUE == pytest.approx(-(6 + 4 * math.sqrt(2)), abs=1e-12)
    assert values.max() == pytest.approx(OPTIMAL_MEMORYLESS_VALUE, abs=1e-6)
    assert float(memoryless_value(OPTIMAL_P_RIGHT)) == pytest.approx(-11.657, abs=1e-3)  # S&B: about -11.6


def test_deterministic_memoryless_policies_never_arrive():
    assert np.all(np.isneginf(memoryless_value(np.array([0.0, 1.0]))))
    assert memoryless_value(np.array([0.0, 1.0]), H).tolist() == [-H, -H]
    assert memoryless_goal_probability(np.array([0.0, 1.0]), H).tolist() == [0.0, 0.0]


def test_the_step_limit_barely_changes_the_value_of_good_policies():
    p = np.array([0.3, 0.5, OPTIMAL_P_RIGHT, 0.8])
    assert np.allclose(memoryless_value(p, 400), memoryless_value(p), atol=1e-6)
    assert abs(float(memoryless_value(OPTIMAL_P_RIGHT, H)) - OPTIMAL_MEMORYLESS_VALUE) < 1e-3
    assert float(memoryless_goal_probability(OPTIMAL_P_RIGHT, H)) > 0.9999


def test_the_mdp_optimum_is_three_steps():
    transitions, rewards, absorbing = corridor_model()
    values = np.zeros(4)
    for _ in range(20):
        values = np.where(absorbing, 0.0, (rewards + np.einsum("ast,t->sa", transitions, values)).max(axis=1))
    assert values.tolist() == [-3.0, -2.0, -1.0, 0.0] and OPTIMAL_MDP_VALUE == -3.0
    right_left_right = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=float)  # pi(a | cell)
    value, reached = evaluate_finite_horizon(transitions, rewards, right_left_right, 3, absorbing)
    assert value[0] == -3.0 and reached[0] == 1.0


def test_bad_probabilities_are_rejected():
    with pytest.raises(ValueError, match="p_right"):
        memoryless_value(1.5)
    with pytest.raises(ValueError, match="p_right"):
        memoryless_goal_probability(np.array([0.5, np.nan]), H)


# ---------------------------------------------------------------------------------------------
# The environment and the vectorised simulator


def test_env_follows_gymnasium_api_and_hides_the_cell():
    env = ShortCorridorEnv(max_steps=10, reveal_state=True)
    assert isinstance(env, gymnasium.Env)
    observation, info = env.reset(seed=3)
    assert observation == CORRIDOR and info == {"state": 0}
    cells, observations = [], []
    for action in (RIGHT, RIGHT, RIGHT, LEFT):
        observation, reward, terminated, truncated, info = env.step(action)
        cells.append(info["state"])
        observations.append(observation)
        assert reward == -1.0 and not terminated and not truncated
    assert cells == [1, 0, 1, 2] and observations == [CORRIDOR] * 4  # different cells, one observation
    observation, reward, terminated, truncated, _ = env.step(RIGHT)
    assert (observation, reward, terminated, truncated) == (GOAL, -1.0, True, False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(RIGHT)
    with pytest.raises(ValueError, match="action"):
        ShortCorridorEnv().step(2)
    with pytest.raises(ValueError, match="max_steps"):
        ShortCorridorEnv(max_steps=0)
    assert ShortCorridorEnv(reveal_state=False).reset()[1] == {}


def test_env_truncates_at_the_step_limit():
    env = ShortCorridorEnv(max_steps=5)
    env.reset()
    results = [env.step(LEFT) for _ in range(5)]
    assert [r[3] for r in results] == [False] * 4 + [True] and not any(r[2] for r in results)


def test_env_and_simulator_agree_with_the_exact_value():
    env, rng = ShortCorridorEnv(max_steps=H), np.random.default_rng(0)
    env_returns = []
    for _ in range(1500):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.random() < OPTIMAL_P_RIGHT))
            total, done = total + reward, terminated or truncated
        env_returns.append(total)
    simulated = rollout(constant(OPTIMAL_P_RIGHT), ObservationKeys(2), 20_000, np.random.default_rng(1)).returns
    exact = float(memoryless_value(OPTIMAL_P_RIGHT, H))
    for returns in (np.array(env_returns), simulated):
        assert abs(returns.mean() - exact) < 4 * returns.std() / np.sqrt(len(returns))


def test_rollout_masks_truncates_and_records_the_hidden_cells():
    always_left = rollout(constant(0.0), ObservationKeys(2), 7, np.random.default_rng(0), horizon=H)
    assert always_left.mask.shape == (7, H) and always_left.mask.all()
    assert always_left.returns.tolist() == [-H] * 7 and not always_left.reached.any()
    assert (always_left.states == 0).all() and always_left.dones[:, -1].all()

    encoder = HistoryKeys(2, 2)
    plan = {0: RIGHT, 1: LEFT, 2: RIGHT}  # right, left, right by the number of steps taken
    episodes = rollout(lambda keys: np.array([plan.get(int(d), LEFT) for d in encoder.depth(keys)], dtype=float),
                       encoder, 3, np.random.default_rng(0))
    assert episodes.mask.shape == (3, 3) and episodes.returns.tolist() == [-3.0] * 3 and episodes.reached.all()
    assert episodes.states[0].tolist() == [0, 1, 2] and episodes.terminated[:, -1].all()


def test_rollout_is_deterministic_given_the_generator():
    a = rollout(constant(0.5), ObservationKeys(2), 50, np.random.default_rng(5))
    b = rollout(constant(0.5), ObservationKeys(2), 50, np.random.default_rng(5))
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.rewards, b.rewards)
    with pytest.raises(ValueError, match="n_episodes"):
        rollout(constant(0.5), ObservationKeys(2), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="probabilities"):
        rollout(lambda keys: np.zeros(3), ObservationKeys(2), 5, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# The learners, on observations and on histories


@pytest.mark.parametrize("seed, p_start", [(0, 0.5), (1, 0.1)])
def test_reinforce_converges_to_the_stochastic_optimum(seed, p_start):
    policy = SoftmaxPolicyTable(ObservationKeys(2), initial_logit=math.log(p_start / (1 - p_start)))
    train_reinforce(rollout, policy, 80, 512, step_size, seed=seed)
    p = float(policy.probs(np.array([CORRIDOR]))[0])
    assert abs(p - OPTIMAL_P_RIGHT) < 0.03
    assert abs(float(memoryless_value(p, H)) - OPTIMAL_MEMORYLESS_VALUE) < 0.5
    returns = rollout(policy.probs, policy.encoder, 20_000, np.random.default_rng(100)).returns
    assert abs(returns.mean() - OPTIMAL_MEMORYLESS_VALUE) < 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_q_learning_on_observations_chatters_and_its_greedy_policy_never_arrives(seed):
    q = QTable(ObservationKeys(2))
    log = train_q_learning(rollout, q, 40, 16, learning_rate=0.1, epsilon=0.1, seed=seed)
    greedy = (log.probe_array()[:, 0, RIGHT] >= log.probe_array()[:, 0, LEFT]).astype(int)
    assert np.count_nonzero(np.diff(greedy)) >= 5  # the greedy action keeps flipping
    action = int(q.greedy_actions(np.array([CORRIDOR]))[0])
    episode = rollout(constant(float(action)), ObservationKeys(2), 1, np.random.default_rng(0))
    assert episode.returns[0] == -H and not episode.reached[0]
    assert np.mean(log.reached) > 0.5  # ... although its epsilon-greedy behaviour often got there


def test_an_observation_model_predicts_dynamics_that_do_not_exist():
    data = rollout(constant(0.5), ObservationKeys(2), 3000, np.random.default_rng(2))
    model, counts = fit_transition_model(data.keys[data.mask], data.actions[data.mask], data.next_keys[data.mask], 2, 2)
    assert model[LEFT, CORRIDOR, GOAL] == 0.0 and 0.1 < model[RIGHT, CORRIDOR, GOAL] < 0.25  # right: a coin flip
    other = rollout(constant(0.8), ObservationKeys(2), 3000, np.random.default_rng(3))
    model_other, _ = fit_transition_model(other.keys[other.mask], other.actions[other.mask], other.next_keys[other.mask], 2, 2)
    assert abs(model_other[RIGHT, CORRIDOR, GOAL] - model[RIGHT, CORRIDOR, GOAL]) > 0.05  # depends on who collected it

    rewards, absorbing = np.array([[-1.0, -1.0], [0.0, 0.0]]), np.array([False, True])
    always_right = np.array([[0.0, 1.0], [0.0, 1.0]])
    predicted_value, predicted_reach = evaluate_finite_horizon(model, rewards, always_right, H, absorbing)
    assert predicted_reach[CORRIDOR] > 0.99 and float(memoryless_goal_probability(1.0, H)) == 0.0
    assert predicted_value[CORRIDOR] > -10 and float(memoryless_value(1.0, H)) == -H


def test_histories_are_markov_and_observations_are_not():
    for encoder, most in ((ObservationKeys(2), 2), (HistoryKeys(2, 2), 1)):
        episodes = rollout(constant(0.5), encoder, 500, np.random.default_rng(4))
        m = episodes.mask
        edges = np.unique(np.stack([episodes.keys[m], episodes.actions[m], episodes.next_keys[m]]), axis=1)
        _, successors = np.unique(edges[:2], axis=1, return_counts=True)
        assert successors.max() == most


@pytest.mark.parametrize("seed", [0, 1])
def test_both_learners_reach_the_mdp_optimum_on_histories(seed):
    policy = SoftmaxPolicyTable(HistoryKeys(2, 2))
    train_reinforce(rollout, policy, 60, 512, lambda k: 10 * step_size(k), seed=seed)
    q = QTable(HistoryKeys(2, 2))
    train_q_learning(rollout, q, 100, 16, learning_rate=0.1, epsilon=0.1, seed=seed)
    for act, encoder in ((policy.greedy, policy.encoder), (lambda k: q.greedy_actions(k).astype(float), q.encoder)):
        episode = rollout(act, encoder, 1, np.random.default_rng(0))
        assert episode.returns[0] == OPTIMAL_MDP_VALUE
        assert episode.actions[0].tolist() == [RIGHT, LEFT, RIGHT]
    stochastic = rollout(policy.probs, policy.encoder, 5000, np.random.default_rng(9)).returns
    assert stochastic.mean() > OPTIMAL_MDP_VALUE - 0.1
