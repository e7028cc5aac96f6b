r"""The short corridor with switched actions (Sutton & Barto 2018, Example 13.1), for chapter 02.

Three non-terminal states and a goal, in a row::

    S=0  <->  1 (actions reversed)  <->  2  ->  G

Every step costs :math:`-1` (undiscounted). In states 0 and 2, *right* moves right and *left* moves
left (left in state 0 bumps into the wall and stays); in state 1 the actions are **reversed**. The
agent sees the same observation in all three states, so a memoryless policy is a single number
:math:`p = \pi(\text{right})`. Its value from the start solves the Bellman equations

.. math::
    v_0 = -1 + p\, v_1 + (1-p)\, v_0, \quad v_1 = -1 + p\, v_0 + (1-p)\, v_2, \quad v_2 = -1 + (1-p)\, v_1,

whose solution is :math:`v_0(p) = -\dfrac{2(2-p)}{p(1-p)}`, maximal at :math:`p^\star = 2 - \sqrt2`
with :math:`v_0(p^\star) = -(6 + 4\sqrt2) \approx -11.657`. Deterministic memoryless policies
(:math:`p \in \{0, 1\}`) never reach the goal. The underlying MDP (states visible) is solved by
*right, left, right*: value :math:`-3`.

This module gives the dynamics as arrays, the exact values (closed form, and exact under a step
limit), a gymnasium environment, and a vectorised simulator (:func:`rollout`) that runs thousands of
episodes at once for the tabular learners of :mod:`seqrl.rl.tabular`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import gymnasium
import numpy as np

from ..rl.tabular import Episodes, KeyEncoder, evaluate_finite_horizon

__all__ = [
    "LEFT",
    "RIGHT",
    "CORRIDOR",
    "GOAL",
    "GOAL_STATE",
    "CORRIDOR_HORIZON",
    "OPTIMAL_P_RIGHT",
    "OPTIMAL_MEMORYLESS_VALUE",
    "OPTIMAL_MDP_VALUE",
    "NEXT_STATE",
    "corridor_model",
    "memoryless_value",
    "memoryless_goal_probability",
    "ShortCorridorEnv",
    "rollout",
]

LEFT, RIGHT = 0, 1  # actions
CORRIDOR, GOAL = 0, 1  # observations: every non-terminal state looks the same
GOAL_STATE = 3  # hidden states 0, 1, 2 and the terminal goal
CORRIDOR_HORIZON = 100  # default step limit: an episode is cut (truncated) after this many steps

OPTIMAL_P_RIGHT = 2.0 - math.sqrt(2.0)  # argmax of v_0(p), root of p^2 - 4p + 2 = 0
OPTIMAL_MEMORYLESS_VALUE = -(6.0 + 4.0 * math.sqrt(2.0))  # v_0(2 - sqrt 2) = -11.657
OPTIMAL_MDP_VALUE = -3.0  # right, left, right with the state visible

# NEXT_STATE[s, a]: where action a leads from state s (state 1 has the actions reversed).
NEXT_STATE = np.array([[0, 1], [2, 0], [1, GOAL_STATE], [GOAL_STATE, GOAL_STATE]], dtype=np.int64)
NEXT_STATE.setflags(write=False)


def corridor_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The corridor as a tabular MDP: ``transitions`` ``(A, S, S)`` :math:`T[a, s, s']`, ``rewards``
    ``(S, A)`` (:math:`-1` except in the goal), ``absorbing`` ``(S,)`` (only the goal); ``S = 4``."""
    n_states = len(NEXT_STATE)
    transitions = np.zeros((2, n_states, n_states))
    for action in (LEFT, RIGHT):
        transitions[action, np.arange(n_states), NEXT_STATE[:, action]] = 1.0
    rewards = np.full((n_states, 2), -1.0)
    rewards[GOAL_STATE] = 0.0
    absorbing = np.arange(n_states) == GOAL_STATE
    return transitions, rewards, absorbing


def _check_p(p_right: Any) -> np.ndarray:
    p = np.asarray(p_right, dtype=np.float64)
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"p_right must be probabilities in [0, 1], got {p_right!r}")
    return p


def _memoryless_policy(p: np.ndarray) -> np.ndarray:
    """``(..., 4, 2)``: the same action probabilities ``(1 - p, p)`` in every state."""
    probs = np.stack([1.0 - p, p], axis=-1)  # (..., 2)
    return np.broadcast_to(probs[..., None, :], p.shape + (len(NEXT_STATE), 2))


def memoryless_value(p_right: Any, horizon: int | None = None) -> np.ndarray:
    r"""Value from the start of the memoryless policy :math:`\pi(\text{right}) = p`.

    Without ``horizon``: the closed form :math:`v_0(p) = -2(2-p)/(p(1-p))` (``-inf`` at
    :math:`p \in \{0, 1\}`). With ``horizon`` :math:`H`: the exact expected return of episodes cut
    after :math:`H` steps (a policy that never arrives scores :math:`-H`), by backward induction.
    Accepts a number or an array of :math:`p`.
    """
    p = _check_p(p_right)
    if horizon is None:
        with np.errstate(divide="ignore"):
            return np.where(p * (1 - p) > 0, -2.0 * (2.0 - p) / np.maximum(p * (1 - p), 1e-300), -np.inf)
    transitions, rewards, absorbing = corridor_model()
    values, _ = evaluate_finite_horizon(transitions, rewards, _memoryless_policy(p), horizon, absorbing)
    return values[..., 0]


def memoryless_goal_probability(p_right: Any, horizon: int) -> np.ndarray:
    """Probability that the memoryless policy :math:`\\pi(\\text{right}) = p` reaches the goal within ``horizon`` steps."""
    p = _check_p(p_right)
    transitions, rewards, absorbing = corridor_model()
    _, absorbed = evaluate_finite_horizon(transitions, rewards, _memoryless_policy(p), horizon, absorbing)
    return absorbed[..., 0]


class ShortCorridorEnv(gymnasium.Env):
    """The short corridor behind gymnasium's API.

    Observations: ``CORRIDOR`` (0) in every non-terminal state, ``GOAL`` (1) on arrival. Actions:
    ``LEFT`` (0), ``RIGHT`` (1). Reward :math:`-1` per step. ``terminated`` when the goal is
    reached; ``truncated`` after ``max_steps`` steps otherwise. With ``reveal_state=True`` the
    hidden state is put in ``info["state"]`` (for plots; a policy must not read it).
    """

    metadata = {"render_modes": []}

    def __init__(self, max_steps: int = CORRIDOR_HORIZON, reveal_state: bool = False) -> None:
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self.reveal_state = bool(reveal_state)
        self.observation_space = gymnasium.spaces.Discrete(2)
        self.action_space = gymnasium.spaces.Discrete(2)
        self._state, self._steps = 0, 0

    def _info(self) -> dict[str, Any]:
        return {"state": self._state} if self.reveal_state else {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)  # the dynamics are deterministic; the seed is for the API
        self._state, self._steps = 0, 0
        return CORRIDOR, self._info()

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if self._state == GOAL_STATE:
            raise RuntimeError("the episode has terminated: call reset() first")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be LEFT (0) or RIGHT (1), got {action!r}")
        self._state = int(NEXT_STATE[self._state, int(action)])
        self._steps += 1
        terminated = self._state == GOAL_STATE
        truncated = not terminated and self._steps >= self.max_steps
        return (GOAL if terminated else CORRIDOR), -1.0, terminated, truncated, self._info()


def rollout(
    policy: Callable[[np.ndarray], np.ndarray],
    encoder: KeyEncoder,
    n_episodes: int,
    rng: np.random.Generator,
    horizon: int = CORRIDOR_HORIZON,
) -> Episodes:
    """Run ``n_episodes`` corridor episodes at once, each until the goal or ``horizon`` steps.

    At every step the agent's key (from ``encoder``: the observation, or the history) goes to
    ``policy``, which returns ``(n,)`` probabilities of RIGHT; actions are drawn from ``rng``.
    The batch is trimmed to the longest episode. Deterministic given the state of ``rng``.

    Returns:
        :class:`~seqrl.rl.tabular.Episodes`, with the hidden states in ``states``.
    """
    if int(n_episodes) < 1 or int(horizon) < 1:
        raise ValueError(f"n_episodes and horizon must be positive, got {n_episodes} and {horizon}")
    n, horizon = int(n_episodes), int(horizon)
    shape = (n, horizon)
    keys, next_keys, actions, states = (np.zeros(shape, dtype=np.int64) for _ in range(4))
    rewards, terminated, mask = np.zeros(shape), np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    state, key = np.zeros(n, dtype=np.int64), encoder.reset(np.full(n, CORRIDOR))
    uniforms = rng.random(shape)  # one draw per (episode, step), taken at once
    running = np.arange(n)  # episodes still going
    steps = 0
    for t in range(horizon):
        if running.size == 0:
            break
        p_right = np.asarray(policy(key[running]), dtype=np.float64)
        if p_right.shape != running.shape:
            raise ValueError(f"policy must return ({running.size},) probabilities, got shape {p_right.shape}")
        action = (uniforms[running, t] < p_right).astype(np.int64)
        new_state = NEXT_STATE[state[running], action]
        arrived = new_state == GOAL_STATE
        new_key = encoder.step(key[running], action, np.where(arrived, GOAL, CORRIDOR))
        keys[running, t], actions[running, t], states[running, t] = key[running], action, state[running]
        rewards[running, t], next_keys[running, t], terminated[running, t] = -1.0, new_key, arrived
        mask[running, t] = True
        state[running], key[running] = new_state, new_key
        running = running[~arrived]
        steps = t + 1
    cut = slice(0, steps)
    return Episodes(keys[:, cut], actions[:, cut], rewards[:, cut], next_keys[:, cut], terminated[:, cut],
                    mask[:, cut], states[:, cut])
