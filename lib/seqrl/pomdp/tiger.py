r"""The Tiger problem (Kaelbling, Littman & Cassandra, 1998) as a tabular POMDP and a gymnasium env.

A tiger sits behind one of two doors, treasure behind the other. The agent can *listen*, which
costs 1 and reports the tiger's side correctly with probability 0.85, or *open* a door: the tiger's
door costs 100, the other door pays 10. Opening a door resets the problem (the tiger is placed
again uniformly at random) and is followed by an uninformative "reset" observation, the same one
the agent sees at the start. Rewards are discounted by :math:`\gamma = 0.95`.

A tabular POMDP :math:`(\mathcal S, \mathcal A, \mathcal O, T, Z, R, b_0, \gamma)` is stored as
arrays, with the conventions used everywhere in :mod:`seqrl.pomdp`:

.. math::
    T[a, s, s'] = P(s_{t+1} = s' \mid s_t = s, a_t = a), \qquad
    Z[a, s', o] = P(o_{t+1} = o \mid s_{t+1} = s', a_t = a), \qquad
    R[s, a] = \mathbb E[r_t \mid s_t = s, a_t = a],

and :math:`b_0(s) = P(s_0 = s)`. The agent sees :attr:`TabularPOMDP.initial_observation` at
:math:`t = 0`, then the observation emitted by :math:`Z` after each action.
"""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium
import numpy as np

__all__ = [
    "TabularPOMDP",
    "TigerPOMDP",
    "TigerEnv",
    "TIGER_LEFT",
    "TIGER_RIGHT",
    "LISTEN",
    "OPEN_LEFT",
    "OPEN_RIGHT",
    "HEAR_LEFT",
    "HEAR_RIGHT",
    "RESET",
]

# States, actions and observations of the Tiger problem (indices into the arrays).
TIGER_LEFT, TIGER_RIGHT = 0, 1
LISTEN, OPEN_LEFT, OPEN_RIGHT = 0, 1, 2
HEAR_LEFT, HEAR_RIGHT, RESET = 0, 1, 2

_PROB_ATOL = 1e-8


def _check_stochastic(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``array`` has ``shape``, is finite, non-negative and sums to 1 on its last axis."""
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must hold finite, non-negative probabilities")
    sums = array.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=_PROB_ATOL, rtol=0.0):
        raise ValueError(f"{name} must sum to 1 over its last axis; sums range over [{sums.min()}, {sums.max()}]")


def _frozen(array: Any) -> np.ndarray:
    """A read-only float64 copy, so a model cannot be changed after it was validated."""
    out = np.array(array, dtype=np.float64)
    out.setflags(write=False)
    return out


class TabularPOMDP:
    r"""A finite POMDP stored as arrays (see the module docstring for the conventions).

    Args:
        T: ``(A, S, S)`` transition probabilities :math:`T[a, s, s']`.
        Z: ``(A, S, O)`` emission probabilities :math:`Z[a, s', o]` of the observation after ``a``.
        R: ``(S, A)`` expected rewards :math:`R[s, a]`.
        initial_belief: ``(S,)`` distribution :math:`b_0` of the first hidden state.
        discount: :math:`\gamma \in [0, 1)`.
        initial_observation: the observation the agent sees at :math:`t = 0`.
        state_names, action_names, observation_names: labels for printing and plots.
    """

    def __init__(
        self,
        T: np.ndarray,
        Z: np.ndarray,
        R: np.ndarray,
        initial_belief: np.ndarray,
        discount: float,
        initial_observation: int,
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        observation_names: Sequence[str] | None = None,
    ) -> None:
        T, Z, R, initial_belief = (_frozen(x) for x in (T, Z, R, initial_belief))
        if T.ndim != 3 or Z.ndim != 3:
            raise ValueError(f"T must be (A, S, S) and Z (A, S, O); got shapes {T.shape} and {Z.shape}")
        n_actions, n_states, n_observations = T.shape[0], T.shape[1], Z.shape[2]
        _check_stochastic("T", T, (n_actions, n_states, n_states))
        _check_stochastic("Z", Z, (n_actions, n_states, n_observations))
        _check_stochastic("initial_belief", initial_belief, (n_states,))
        if R.shape != (n_states, n_actions) or not np.all(np.isfinite(R)):
            raise ValueError(f"R must be a finite (S, A) = {(n_states, n_actions)} array, got shape {R.shape}")
        if not 0.0 <= float(discount) < 1.0:
            raise ValueError(f"discount must be in [0, 1), got {discount}")
        if not 0 <= int(initial_observation) < n_observations:
            raise ValueError(f"initial_observation must be in [0, {n_observations}), got {initial_observation}")
        self.T, self.Z, self.R, self.initial_belief = T, Z, R, initial_belief
        self.discount = float(discount)
        self.initial_observation = int(initial_observation)
        self.state_names = tuple(state_names or (f"s{i}" for i in range(n_states)))
        self.action_names = tuple(action_names or (f"a{i}" for i in range(n_actions)))
        self.observation_names = tuple(observation_names or (f"o{i}" for i in range(n_observations)))

    @property
    def n_states(self) -> int:
        return self.T.shape[1]

    @property
    def n_actions(self) -> int:
        return self.T.shape[0]

    @property
    def n_observations(self) -> int:
        return self.Z.shape[2]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(states={self.state_names}, actions={self.action_names}, "
            f"observations={self.observation_names}, discount={self.discount})"
        )


class TigerPOMDP(TabularPOMDP):
    r"""The Tiger problem as a :class:`TabularPOMDP`.

    States ``tiger-left, tiger-right``; actions ``listen, open-left, open-right``; observations
    ``hear-left, hear-right, reset``. With :math:`q` the listening accuracy:

    .. math::
        T[\text{listen}, s, s'] = [s = s'], \qquad T[\text{open-}x, s, s'] = b_0(s') = \tfrac12,

        Z[\text{listen}, s', \text{hear-}s'] = q, \quad Z[\text{listen}, s', \text{hear-other}] = 1 - q,
        \qquad Z[\text{open-}x, s', \text{reset}] = 1,

        R[s, \text{listen}] = -1, \quad R[s, \text{open-}x] =
        \begin{cases} -100 & x = s \\ +10 & x \ne s \end{cases}.

    The "reset" observation carries no information about the new tiger position (it has the same
    probability under both states), exactly like the random growl of the original formulation; its
    being distinct only lets memoryless policies know that the problem just restarted.
    """

    def __init__(
        self,
        listen_accuracy: float = 0.85,
        listen_reward: float = -1.0,
        tiger_reward: float = -100.0,
        treasure_reward: float = 10.0,
        discount: float = 0.95,
    ) -> None:
        if not 0.0 <= listen_accuracy <= 1.0:
            raise ValueError(f"listen_accuracy must be a probability, got {listen_accuracy}")
        q = float(listen_accuracy)
        uniform = np.full(2, 0.5)

        T = np.empty((3, 2, 2))
        T[LISTEN] = np.eye(2)  # listening leaves the tiger where it is
        T[OPEN_LEFT] = T[OPEN_RIGHT] = uniform  # opening re-places it at random

        Z = np.zeros((3, 2, 3))
        Z[LISTEN, TIGER_LEFT, [HEAR_LEFT, HEAR_RIGHT]] = q, 1.0 - q
        Z[LISTEN, TIGER_RIGHT, [HEAR_LEFT, HEAR_RIGHT]] = 1.0 - q, q
        Z[OPEN_LEFT, :, RESET] = Z[OPEN_RIGHT, :, RESET] = 1.0

        R = np.empty((2, 3))
        R[:, LISTEN] = listen_reward
        R[TIGER_LEFT, [OPEN_LEFT, OPEN_RIGHT]] = tiger_reward, treasure_reward
        R[TIGER_RIGHT, [OPEN_LEFT, OPEN_RIGHT]] = treasure_reward, tiger_reward

        super().__init__(
            T, Z, R, uniform, discount, initial_observation=RESET,
            state_names=("tiger-left", "tiger-right"),
            action_names=("listen", "open-left", "open-right"),
            observation_names=("hear-left", "hear-right", "reset"),
        )
        self.listen_accuracy = q


def _sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One index drawn from the distribution ``probs`` (shape ``(K,)``)."""
    return int(min(np.searchsorted(np.cumsum(probs), rng.random(), side="right"), len(probs) - 1))


class TigerEnv(gymnasium.Env):
    """The Tiger problem behind gymnasium's API; an episode is ``max_steps`` steps, ended by truncation.

    Opening a door does not end the episode (the problem resets in place, as in the POMDP), so
    ``terminated`` is always ``False`` and ``truncated`` becomes ``True`` after ``max_steps`` steps.
    The first observation is ``RESET``. With ``reveal_state=True`` the hidden state (after the
    step) is put in ``info["state"]``, for debugging and for plots; a policy must not read it.

    Args:
        model: the tabular POMDP to simulate (default: :class:`TigerPOMDP` with the standard numbers).
        max_steps: the fixed episode length.
        reveal_state: whether ``info`` carries the hidden state.
    """

    metadata = {"render_modes": []}

    def __init__(self, model: TabularPOMDP | None = None, max_steps: int = 100, reveal_state: bool = False) -> None:
        self.model = model if model is not None else TigerPOMDP()
        if not isinstance(self.model, TabularPOMDP):
            raise TypeError(f"model must be a TabularPOMDP, got {type(self.model).__name__}")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self.reveal_state = bool(reveal_state)
        self.observation_space = gymnasium.spaces.Discrete(self.model.n_observations)
        self.action_space = gymnasium.spaces.Discrete(self.model.n_actions)
        self._state = 0
        self._steps = 0

    def _info(self) -> dict[str, Any]:
        return {"state": self._state} if self.reveal_state else {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = _sample(self.model.initial_belief, self.np_random)
        self._steps = 0
        return self.model.initial_observation, self._info()

    def step(self, action: int) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in [0, {self.model.n_actions}), got {action!r}")
        action = int(action)
        reward = float(self.model.R[self._state, action])
        self._state = _sample(self.model.T[action, self._state], self.np_random)
        observation = _sample(self.model.Z[action, self._state], self.np_random)
        self._steps += 1
        return observation, reward, False, self._steps >= self.max_steps, self._info()
