"""Claims of chapter 01 (POMDPs) about the Tiger problem: the belief filter, the optimal value and
policy, and what policies with little memory lose."""
from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest

from seqrl.pomdp import (
    HEAR_LEFT,
    HEAR_RIGHT,
    LISTEN,
    OPEN_LEFT,
    OPEN_RIGHT,
    RESET,
    TIGER_LEFT,
    BeliefThresholdPolicy,
    TigerEnv,
    TigerPOMDP,
    WindowPolicy,
    WindowSpace,
    belief_update,
    belief_update_batch,
    best_memoryless_policy,
    best_window_policy,
    evaluate_window_policies,
    observation_probabilities,
    simulate,
    solve_alpha_vectors,
    solve_belief_grid,
    upper_envelope,
)

V_STAR_UNIFORM = 19.3713674  # verified: exact alpha-vector value iteration, error bound 1e-6


@pytest.fixture(scope="module")
def model() -> TigerPOMDP:
    return TigerPOMDP()


@pytest.fixture(scope="module")
def exact(model):
    return solve_alpha_vectors(model, tol=1e-6)


@pytest.fixture(scope="module")
def window_values(model) -> dict[int, float]:
    return {k: best_window_policy(k, model).value for k in (1, 2, 3)}


def _within_standard_errors(returns: np.ndarray, expected: float, n_se: float = 3.0) -> bool:
    return abs(returns.mean() - expected) <= n_se * returns.std(ddof=1) / np.sqrt(len(returns))


def test_belief_filter_matches_bayes_rule(model):
    uniform = np.array([0.5, 0.5])
    once = belief_update(uniform, LISTEN, HEAR_LEFT, model)
    np.testing.assert_allclose(once, [0.85, 0.15], atol=1e-12)
    twice = belief_update(once, LISTEN, HEAR_LEFT, model)
    np.testing.assert_allclose(twice[TIGER_LEFT], 0.85**2 / (0.85**2 + 0.15**2), atol=1e-12)
    np.testing.assert_allclose(belief_update(once, LISTEN, HEAR_RIGHT, model), uniform, atol=1e-12)
    np.testing.assert_allclose(belief_update(twice, OPEN_LEFT, RESET, model), uniform, atol=1e-12)  # a reset forgets
    np.testing.assert_allclose(observation_probabilities(once, LISTEN, model), [0.85**2 + 0.15**2, 2 * 0.85 * 0.15, 0])
    batch = belief_update_batch(np.stack([uniform, once]), np.array([LISTEN, LISTEN]), np.array([HEAR_LEFT] * 2), model)
    np.testing.assert_allclose(batch, np.stack([once, twice]), atol=1e-12)


@pytest.mark.parametrize(
    "belief, action, observation, message",
    [
        ([0.5, 0.5, 0.0], LISTEN, HEAR_LEFT, "shape"),
        ([0.6, 0.6], LISTEN, HEAR_LEFT, "sum to 1"),
        ([1.5, -0.5], LISTEN, HEAR_LEFT, "non-negative"),
        ([0.5, np.nan], LISTEN, HEAR_LEFT, "finite"),
        ([0.5, 0.5], 3, HEAR_LEFT, "action must be in"),
        ([0.5, 0.5], -1, HEAR_LEFT, "action must be in"),
        ([0.5, 0.5], 1.0, HEAR_LEFT, "integer"),
        ([0.5, 0.5], LISTEN, 7, "observation must be in"),
        ([0.5, 0.5], LISTEN, RESET, "probability zero"),  # listening never yields the reset signal
        ([0.5, 0.5], OPEN_RIGHT, HEAR_LEFT, "probability zero"),
    ],
)
def test_belief_rejects_bad_input(model, belief, action, observation, message):
    with pytest.raises(ValueError, match=message):
        belief_update(np.array(belief), action, observation, model)


def test_belief_rejects_a_model_that_is_not_a_pomdp():
    with pytest.raises(TypeError, match="TabularPOMDP"):
        belief_update(np.array([0.5, 0.5]), LISTEN, HEAR_LEFT, model={"T": None})


def test_upper_envelope_prunes_exactly():
    lines = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [0.0, 1.0], [0.7, 0.7]])
    kept, breakpoints = upper_envelope(lines)
    assert kept.tolist() == [1, 5, 0]  # the duplicate, the line below and the one touching at 0.5 go
    np.testing.assert_allclose(breakpoints, [0.3, 0.7])
    kept, _ = upper_envelope(lines[[0, 1, 2]])  # (0.5, 0.5) touches the envelope at one point only
    assert sorted(kept.tolist()) == [0, 1]


def test_alpha_vector_backup_equals_pointwise_bellman_operator(model, exact):
    """One exact backup of the solution agrees with (HV)(b) computed at random beliefs with the filter."""
    from seqrl.pomdp.solvers import _backup

    alphas, _, _ = _backup(exact.alphas, model)
    for p in np.random.default_rng(0).random(25):
        belief = np.array([p, 1 - p])
        q_values = []
        for action in range(model.n_actions):
            probs = observation_probabilities(belief, action, model)
            future = sum(
                probs[o] * exact.value(belief_update(belief, action, o, model)[0]) for o in np.flatnonzero(probs > 0)
            )
            q_values.append(belief @ model.R[:, action] + model.discount * future)
        assert abs(max(q_values) - (alphas @ belief).max()) < 1e-9


def test_alpha_vector_and_grid_solvers_agree(model, exact):
    grid = solve_belief_grid(model, n_points=1001, tol=1e-6)
    coarse = solve_belief_grid(model, n_points=101, tol=1e-6)
    for approx in (grid, coarse):
        assert abs(approx.value(0.5) - exact.value(0.5)) <= 0.005 * abs(exact.value(0.5))
        beliefs = np.linspace(0, 1, 2001)
        assert np.all(approx.value(beliefs) >= exact.value(beliefs) - 1e-5)  # chords lie above a convex V
        assert np.abs(approx.value(beliefs) - exact.value(beliefs)).max() < 0.5
    spacing = grid.grid[1] - grid.grid[0]
    assert abs(grid.thresholds.lower - exact.thresholds.lower) < spacing
    assert abs(grid.thresholds.upper - exact.thresholds.upper) < spacing


def test_optimal_value_from_uniform_belief(model, exact):
    assert exact.error_bound <= 1e-6
    assert abs(exact.value(0.5) - V_STAR_UNIFORM) < 2e-6
    policy = BeliefThresholdPolicy(exact.thresholds, model)
    returns = simulate(policy, n_episodes=20_000, horizon=300, seed=0, model=model)  # gamma^300 ~ 2e-7
    assert _within_standard_errors(returns, exact.value(0.5))


def test_optimal_policy_is_threshold(exact):
    thresholds = exact.thresholds
    assert thresholds.actions(0.5) == LISTEN
    assert thresholds.actions(0.99) == OPEN_RIGHT  # the tiger is surely left: open the other door
    assert thresholds.actions(0.01) == OPEN_LEFT
    assert abs(thresholds.lower - (1 - thresholds.upper)) < 1e-9  # mirror symmetry
    # one net "hear-left" (b = 0.85) is not enough, two (b = 0.9698) are
    two_hears = 0.85**2 / (0.85**2 + 0.15**2)
    assert 0.85 < thresholds.upper < two_hears
    beliefs = np.linspace(0, 1, 1001)
    np.testing.assert_array_equal(exact.greedy_actions(beliefs), thresholds.actions(beliefs))


def test_best_memoryless_is_strictly_worse(model, exact, window_values):
    memoryless = best_memoryless_policy(model)
    assert memoryless.value >= window_values[1] - 1e-9  # stochastic includes deterministic
    # the latest observation is right only 85% of the time, so opening never pays: listen forever
    assert abs(memoryless.value - (-1 / (1 - model.discount))) < 1e-6
    assert memoryless.value < exact.value(0.5) - 30


def test_window_policies_improve_with_k(exact, window_values):
    values = [window_values[k] for k in (1, 2, 3)]
    assert values == sorted(values)
    assert values[-1] < exact.value(0.5)
    np.testing.assert_allclose(values, [-20.0, 12.0440593, 18.5857854], atol=1e-6)


@pytest.mark.parametrize("k", [1, 2])
def test_window_search_matches_brute_force(model, window_values, k):
    space = WindowSpace(k, model)
    tables = np.stack(np.meshgrid(*[np.arange(model.n_actions)] * len(space), indexing="ij"), -1).reshape(-1, len(space))
    values = evaluate_window_policies(np.eye(model.n_actions)[tables], space)
    assert abs(values.max() - window_values[k]) < 1e-9


def test_exact_window_value_matches_simulation(model):
    solution = best_window_policy(2, model)
    returns = simulate(solution.policy(), n_episodes=10_000, horizon=300, seed=1, model=model)
    assert _within_standard_errors(returns, solution.value)


def test_env_follows_gymnasium_api(model):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(TigerEnv(max_steps=20))
    env = TigerEnv(max_steps=5, reveal_state=True)
    assert isinstance(env, gymnasium.Env)
    observation, info = env.reset(seed=3)
    assert observation == RESET and info["state"] in (0, 1)
    observation, reward, terminated, truncated, info = env.step(LISTEN)
    assert reward == -1.0 and observation in (HEAR_LEFT, HEAR_RIGHT) and not terminated and not truncated
    state = info["state"]
    observation, reward, terminated, truncated, info = env.step(OPEN_LEFT)
    assert reward == (-100.0 if state == TIGER_LEFT else 10.0) and observation == RESET
    for _ in range(3):
        *_, terminated, truncated, _ = env.step(LISTEN)
    assert truncated and not terminated
    assert TigerEnv().reset(seed=0)[1] == {}  # the hidden state stays hidden by default
    with pytest.raises(ValueError, match="action"):
        env.step(5)


def test_simulation_is_deterministic_given_seed(model, exact):
    policy = BeliefThresholdPolicy(exact.thresholds, model)
    first = simulate(policy, n_episodes=500, horizon=50, seed=7, model=model)
    again = simulate(policy, n_episodes=500, horizon=50, seed=7, model=model)
    other = simulate(policy, n_episodes=500, horizon=50, seed=8, model=model)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    stochastic = WindowPolicy(np.full((3, 3), 1 / 3), WindowSpace(1, model))
    np.testing.assert_array_equal(
        simulate(stochastic, 100, 20, seed=1, model=model), simulate(stochastic, 100, 20, seed=1, model=model)
    )

    def rollout(seed: int) -> list:
        env = TigerEnv(max_steps=30, reveal_state=True)
        env.reset(seed=seed)
        return [env.step(step % 3) for step in range(30)]

    assert rollout(11) == rollout(11)
