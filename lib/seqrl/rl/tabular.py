r"""Tabular learners for small partially observed problems: what they condition on, and how they learn.

A tabular agent keeps one entry per *key*, and the key is whatever it conditions on. Two choices
make the point of chapter 02:

* :class:`ObservationKeys`: the key is the latest observation :math:`o_t` (a memoryless agent);
* :class:`HistoryKeys`: the key is the whole history :math:`h_t = (o_0, a_0, o_1, \dots, o_t)`,
  numbered as the nodes of a tree that grows as new histories are met. Histories are Markov.

On these keys, three learners, each written once and used with either encoding:

* :class:`SoftmaxPolicyTable` and :func:`reinforce_update`: REINFORCE with a baseline, on a
  two-action softmax policy with one logit per key, built on :func:`seqrl.rl.discounted_returns`
  and :func:`seqrl.rl.reinforce_loss`;
* :class:`QTable` and :func:`q_learning_update`: one-step Q-learning;
* :func:`fit_transition_model` and :func:`evaluate_finite_horizon`: a count-based model
  :math:`\hat P(o' \mid o, a)` and the exact finite-horizon value of a policy in a tabular model.

Experience comes as :class:`Episodes`, a batch of right-padded episodes; an environment supplies
a *sampler* ``sample(policy, encoder, n_episodes, rng) -> Episodes`` (for instance
:func:`seqrl.pomdp.corridor.rollout`), and :func:`train_reinforce` / :func:`train_q_learning`
alternate sampling and updating. Everything is numpy on the CPU; only the REINFORCE loss is a
(tiny) torch computation, so that the one library implementation of the loss is the one used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .advantages import masked_mean
from .losses import reinforce_loss
from .returns import discounted_returns

__all__ = [
    "KeyEncoder",
    "ObservationKeys",
    "HistoryKeys",
    "Episodes",
    "Sampler",
    "SoftmaxPolicyTable",
    "QTable",
    "reinforce_update",
    "q_learning_update",
    "train_reinforce",
    "train_q_learning",
    "TrainingLog",
    "fit_transition_model",
    "evaluate_finite_horizon",
]


# ---------------------------------------------------------------------------------------------
# What the agent conditions on


class KeyEncoder(Protocol):
    """Turns what an agent has seen into integer keys of a table, for ``N`` episodes at once."""

    @property
    def n_keys(self) -> int:
        """Keys handed out so far (tables need this many rows)."""

    def reset(self, observations: np.ndarray) -> np.ndarray:
        """``(N,)`` keys for the first ``(N,)`` observations."""

    def step(self, keys: np.ndarray, actions: np.ndarray, observations: np.ndarray) -> np.ndarray:
        """``(N,)`` keys after taking ``actions`` in ``keys`` and seeing the next ``observations``."""


class ObservationKeys:
    """The key is the latest observation, :math:`k_t = o_t`: a memoryless agent."""

    def __init__(self, n_observations: int) -> None:
        if int(n_observations) < 1:
            raise ValueError(f"n_observations must be positive, got {n_observations}")
        self._n = int(n_observations)

    @property
    def n_keys(self) -> int:
        return self._n

    def reset(self, observations: np.ndarray) -> np.ndarray:
        return np.asarray(observations, dtype=np.int64).copy()

    def step(self, keys: np.ndarray, actions: np.ndarray, observations: np.ndarray) -> np.ndarray:
        return np.asarray(observations, dtype=np.int64).copy()


class HistoryKeys:
    r"""The key is the whole history :math:`h_t = (o_0, a_0, o_1, \dots, a_{t-1}, o_t)`.

    Histories form a tree: :math:`h_{t+1} = (h_t, a_t, o_{t+1})` is a child of :math:`h_t`. Nodes
    are numbered in the order they are first met (``0, 1, 2, ...``), so a table indexed by key
    grows with the part of the tree the agent has visited, never with the (exponential) whole.
    A history is a Markov state by construction: it contains everything the agent could know.

    Args:
        n_actions, n_observations: sizes of the action and observation sets.
    """

    def __init__(self, n_actions: int, n_observations: int) -> None:
        if int(n_actions) < 1 or int(n_observations) < 1:
            raise ValueError(f"n_actions and n_observations must be positive, got {n_actions}, {n_observations}")
        self.n_actions, self.n_observations = int(n_actions), int(n_observations)
        self._children = np.full((1024, self.n_actions, self.n_observations), -1, dtype=np.int64)
        self._parent = np.full(1024, -1, dtype=np.int64)
        self._label = np.zeros((1024, 2), dtype=np.int64)  # (action, observation) that led here; root: (-1, o_0)
        self._depth = np.zeros(1024, dtype=np.int64)
        self._roots = np.full(self.n_observations, -1, dtype=np.int64)
        self._n = 0

    @property
    def n_keys(self) -> int:
        return self._n

    def depth(self, keys: np.ndarray) -> np.ndarray:
        """Number of actions taken in each history (``t`` for :math:`h_t`)."""
        return self._depth[np.asarray(keys)]

    def _allocate(self, count: int) -> np.ndarray:
        while self._n + count > len(self._parent):  # double the capacity
            grow = len(self._parent)
            self._children = np.concatenate([self._children, np.full_like(self._children[:grow], -1)])
            self._parent = np.concatenate([self._parent, np.full(grow, -1, dtype=np.int64)])
            self._label = np.concatenate([self._label, np.zeros((grow, 2), dtype=np.int64)])
            self._depth = np.concatenate([self._depth, np.zeros(grow, dtype=np.int64)])
        ids = np.arange(self._n, self._n + count)
        self._n += count
        return ids

    def _check(self, name: str, values: np.ndarray, size: int) -> np.ndarray:
        values = np.asarray(values, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() >= size):
            raise ValueError(f"{name} must be in [0, {size}), got values in [{values.min()}, {values.max()}]")
        return values

    def reset(self, observations: np.ndarray) -> np.ndarray:
        observations = self._check("observations", observations, self.n_observations)
        for o in np.unique(observations):
            if self._roots[o] < 0:
                (node,) = self._allocate(1)
                self._roots[o], self._label[node] = node, (-1, o)
        return self._roots[observations]

    def step(self, keys: np.ndarray, actions: np.ndarray, observations: np.ndarray) -> np.ndarray:
        keys = self._check("keys", keys, self._n)
        actions = self._check("actions", actions, self.n_actions)
        observations = self._check("observations", observations, self.n_observations)
        children = self._children[keys, actions, observations]  # (N,)
        new = children < 0
        if new.any():  # one node per distinct new (history, action, observation), however many episodes share it
            edges = (keys[new] * self.n_actions + actions[new]) * self.n_observations + observations[new]
            unique_edges, inverse = np.unique(edges, return_inverse=True)
            ids = self._allocate(len(unique_edges))
            parents, rest = np.divmod(unique_edges, self.n_actions * self.n_observations)
            edge_actions, edge_observations = np.divmod(rest, self.n_observations)
            self._children[parents, edge_actions, edge_observations] = ids
            self._parent[ids], self._depth[ids] = parents, self._depth[parents] + 1
            self._label[ids] = np.stack([edge_actions, edge_observations], axis=1)
            children[new] = ids[inverse.reshape(-1)]
        return children

    def path(self, key: int) -> list[tuple[int, int]]:
        """The ``(action, observation)`` steps from the root to ``key`` (the root's own observation excluded)."""
        key = int(self._check("key", np.array([key]), self._n)[0])
        steps = []
        while self._parent[key] >= 0:
            steps.append(tuple(int(x) for x in self._label[key]))
            key = int(self._parent[key])
        return steps[::-1]


# ---------------------------------------------------------------------------------------------
# Experience


@dataclass
class Episodes:
    """A batch of ``N`` episodes, right-padded to ``T`` steps; ``mask`` marks the real steps.

    Step ``t`` of episode ``i`` is the transition ``(keys, actions, rewards, next_keys,
    terminated)[i, t]``; ``terminated`` is true where the episode reached a terminal state (an
    episode cut by the step limit has no terminal step). ``states`` optionally holds the hidden
    states, for diagnostics only.
    """

    keys: np.ndarray  # (N, T) int64
    actions: np.ndarray  # (N, T) int64
    rewards: np.ndarray  # (N, T) float64, 0 on padding
    next_keys: np.ndarray  # (N, T) int64
    terminated: np.ndarray  # (N, T) bool
    mask: np.ndarray  # (N, T) bool
    states: np.ndarray | None = None  # (N, T) int64, hidden

    def __post_init__(self) -> None:
        shape = self.mask.shape
        for name in ("keys", "actions", "rewards", "next_keys", "terminated"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"Episodes.{name} must have the mask's shape {shape}, got {getattr(self, name).shape}")

    @property
    def returns(self) -> np.ndarray:
        """``(N,)`` undiscounted returns :math:`\\sum_t r_t`."""
        return self.rewards.sum(axis=1)

    @property
    def lengths(self) -> np.ndarray:
        """``(N,)`` number of real steps."""
        return self.mask.sum(axis=1)

    @property
    def reached(self) -> np.ndarray:
        """``(N,)`` whether each episode ended in a terminal state (rather than at the step limit)."""
        return self.terminated.any(axis=1)

    @property
    def dones(self) -> np.ndarray:
        """``(N, T)`` true at the last real step of each episode (terminal or truncated)."""
        last = self.lengths - 1
        dones = np.zeros_like(self.mask)
        rows = np.flatnonzero(last >= 0)
        dones[rows, last[rows]] = True
        return dones


PolicyFn = Callable[[np.ndarray], np.ndarray]
Sampler = Callable[[PolicyFn, KeyEncoder, int, np.random.Generator], Episodes]


def _grown(table: np.ndarray, n_rows: int, fill: float) -> np.ndarray:
    """``table`` with rows appended (filled with ``fill``) up to at least ``n_rows``."""
    if len(table) >= n_rows:
        return table
    extra = max(n_rows - len(table), len(table))  # amortised doubling
    return np.concatenate([table, np.full((extra,) + table.shape[1:], fill, dtype=table.dtype)])


# ---------------------------------------------------------------------------------------------
# Policy gradient: a softmax policy with one logit per key


class SoftmaxPolicyTable:
    r"""A two-action softmax policy with one logit per key: :math:`\pi(a{=}1 \mid k) = \sigma(\theta_k)`.

    With two actions the softmax over the logits :math:`(0, \theta_k)` is the logistic function, so
    one number per key is the whole policy. Action 1 is "right" in the corridor.

    Args:
        encoder: what the policy conditions on; the table grows with ``encoder.n_keys``.
        initial_logit: :math:`\theta` of every new key (0: both actions equally likely).
    """

    def __init__(self, encoder: KeyEncoder, initial_logit: float = 0.0) -> None:
        self.encoder = encoder
        self.initial_logit = float(initial_logit)
        self._logits = np.full(16, self.initial_logit)

    @property
    def logits(self) -> np.ndarray:
        """``(n_keys,)`` the logits of every key met so far (a view: writing to it changes the policy)."""
        self._logits = _grown(self._logits, self.encoder.n_keys, self.initial_logit)
        return self._logits[: self.encoder.n_keys]

    def probs(self, keys: np.ndarray) -> np.ndarray:
        """``(N,)`` probability of action 1 at each key."""
        return 1.0 / (1.0 + np.exp(-self.logits[np.asarray(keys)]))

    def greedy(self, keys: np.ndarray) -> np.ndarray:
        """``(N,)`` the more likely action at each key (ties: action 1), as probabilities 0 or 1."""
        return (self.logits[np.asarray(keys)] >= 0).astype(np.float64)


def reinforce_update(policy: SoftmaxPolicyTable, episodes: Episodes, learning_rate: float, gamma: float = 1.0) -> float:
    r"""One REINFORCE step with a baseline: gradient descent on the table of logits.

    .. math::
        G_t = \sum_{k \ge t} \gamma^{k-t} r_k, \qquad b = \text{mean of } G_t \text{ over the batch}, \qquad
        \mathcal L(\theta) = -\frac{1}{M} \sum_{i,t} (G^i_t - b) \log \pi_\theta(a^i_t \mid k^i_t),

    :math:`M` the number of real steps, :math:`\theta \leftarrow \theta - \alpha \nabla_\theta \mathcal L`.
    The constant baseline leaves the gradient unbiased (it may depend on anything but the action)
    and cuts its variance. The loss is computed by :func:`seqrl.rl.reinforce_loss` on the logits of
    the visited keys (indexing the table, so a key visited twice gets the sum of its steps'
    gradients). Returns the loss.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    mask = torch.as_tensor(episodes.mask)
    if not mask.any():
        raise ValueError("the episodes hold no real steps")
    theta = torch.tensor(policy.logits, requires_grad=True)  # (K,) the whole table, a leaf
    keys, took_1 = torch.as_tensor(episodes.keys), torch.as_tensor(episodes.actions == 1)
    logprobs = torch.where(took_1, F.logsigmoid(theta)[keys], F.logsigmoid(-theta)[keys])  # (N, T) log pi(a_t | k_t)
    returns = discounted_returns(torch.as_tensor(episodes.rewards), gamma, torch.as_tensor(episodes.dones))
    baseline = masked_mean(returns, mask)
    loss = reinforce_loss(logprobs, returns - baseline, mask)
    loss.backward()  # indexing the table scatters each step's gradient back to its key
    policy.logits[:] -= learning_rate * theta.grad.numpy()
    return loss.item()


# ---------------------------------------------------------------------------------------------
# Q-learning


class QTable:
    r"""Action values :math:`Q(k, a)`, one row per key, initialised to ``initial_value``.

    Args:
        encoder: what Q conditions on; the table grows with ``encoder.n_keys``.
        n_actions: number of actions.
        initial_value: :math:`Q` of every new key (0 is optimistic when rewards are negative).
    """

    def __init__(self, encoder: KeyEncoder, n_actions: int = 2, initial_value: float = 0.0) -> None:
        if int(n_actions) < 2:
            raise ValueError(f"n_actions must be at least 2, got {n_actions}")
        self.encoder = encoder
        self.n_actions = int(n_actions)
        self.initial_value = float(initial_value)
        self._values = np.full((16, self.n_actions), self.initial_value)

    @property
    def values(self) -> np.ndarray:
        """``(n_keys, A)`` the action values of every key met so far (a view)."""
        self._values = _grown(self._values, self.encoder.n_keys, self.initial_value)
        return self._values[: self.encoder.n_keys]

    def greedy_actions(self, keys: np.ndarray) -> np.ndarray:
        """``(N,)`` :math:`\\arg\\max_a Q(k, a)` (ties: the highest action index)."""
        values = self.values[np.asarray(keys)]
        return values.shape[1] - 1 - np.argmax(values[:, ::-1], axis=1)

    def epsilon_greedy_probs(self, keys: np.ndarray, epsilon: float) -> np.ndarray:
        r"""``(N,)`` probability of action 1 under :math:`\epsilon`-greedy (two actions; ties split evenly).

        .. math:: \pi(a \mid k) = \frac{\epsilon}{|A|} + (1 - \epsilon) \frac{[a \in \arg\max Q(k, \cdot)]}{|\arg\max Q(k, \cdot)|}
        """
        if self.n_actions != 2:
            raise ValueError("epsilon_greedy_probs returns p(action 1) and needs exactly two actions")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        values = self.values[np.asarray(keys)]
        greedy_1 = np.where(values[:, 1] > values[:, 0], 1.0, np.where(values[:, 1] == values[:, 0], 0.5, 0.0))
        return epsilon / 2 + (1 - epsilon) * greedy_1


def q_learning_update(q: QTable, episodes: Episodes, learning_rate: float, gamma: float = 1.0) -> float:
    r"""Q-learning on a batch of episodes, replayed step by step in time order.

    .. math:: Q(k_t, a_t) \leftarrow Q(k_t, a_t) + \alpha \big(r_t + \gamma (1 - d_t) \max_{a'} Q(k_{t+1}, a') - Q(k_t, a_t)\big),

    with :math:`d_t = 1` only at a terminal step: an episode cut by the step limit is bootstrapped,
    since the limit is not part of what the agent sees (Pardo et al. 2018). At each time index the
    transitions of all episodes are applied together, the TD errors of transitions that share a
    ``(key, action)`` averaged (a minibatch step). Returns the mean squared TD error.
    """
    if not 0.0 < learning_rate <= 1.0:
        raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate}")
    values = q.values
    n_actions, squared, count = q.n_actions, 0.0, 0
    for t in range(episodes.mask.shape[1]):
        real = episodes.mask[:, t]
        keys, actions = episodes.keys[real, t], episodes.actions[real, t]
        bootstrap = values[episodes.next_keys[real, t]].max(axis=1) * ~episodes.terminated[real, t]
        td_errors = episodes.rewards[real, t] + gamma * bootstrap - values[keys, actions]
        cells = keys * n_actions + actions
        sums = np.bincount(cells, weights=td_errors, minlength=values.size)
        visits = np.bincount(cells, minlength=values.size)
        touched = visits > 0
        values.reshape(-1)[touched] += learning_rate * sums[touched] / visits[touched]
        squared, count = squared + float((td_errors**2).sum()), count + len(td_errors)
    return squared / max(count, 1)


# ---------------------------------------------------------------------------------------------
# Training loops


@dataclass
class TrainingLog:
    """What a training loop records once per batch of episodes."""

    mean_return: list[float]  # mean undiscounted return of the batch (behaviour policy)
    reached: list[float]  # share of the batch that reached a terminal state
    probes: list[np.ndarray]  # the probed table rows (policy: p(action 1); Q: the values)

    def probe_array(self) -> np.ndarray:
        """``(batches, ...)`` the probes stacked."""
        return np.stack(self.probes)


def _check_loop(n_batches: int, batch_size: int) -> None:
    if int(n_batches) < 1 or int(batch_size) < 1:
        raise ValueError(f"n_batches and batch_size must be positive, got {n_batches} and {batch_size}")


def train_reinforce(
    sample: Sampler,
    policy: SoftmaxPolicyTable,
    n_batches: int,
    batch_size: int,
    learning_rate: float | Callable[[int], float],
    seed: int,
    gamma: float = 1.0,
    probe_keys: np.ndarray | None = None,
) -> TrainingLog:
    """Alternate sampling ``batch_size`` episodes with ``policy`` and one :func:`reinforce_update`.

    ``learning_rate`` is a number or a schedule ``k -> alpha_k`` of the batch index ``k = 0, 1, ...``
    (a decaying step, e.g. ``alpha_0 / (1 + k / kappa)``, averages the gradient noise away, as
    stochastic approximation needs). ``probe_keys`` (default: key 0) are the keys whose
    :math:`p(\\text{action } 1)` is recorded after every update. Deterministic given ``seed``.
    """
    _check_loop(n_batches, batch_size)
    rng = np.random.default_rng(seed)
    probe_keys = np.zeros(1, dtype=np.int64) if probe_keys is None else np.asarray(probe_keys)
    log = TrainingLog([], [], [])
    schedule = learning_rate if callable(learning_rate) else (lambda k: learning_rate)
    for k in range(int(n_batches)):
        episodes = sample(policy.probs, policy.encoder, int(batch_size), rng)
        reinforce_update(policy, episodes, float(schedule(k)), gamma)
        log.mean_return.append(float(episodes.returns.mean()))
        log.reached.append(float(episodes.reached.mean()))
        log.probes.append(policy.probs(probe_keys))
    return log


def train_q_learning(
    sample: Sampler,
    q: QTable,
    n_batches: int,
    batch_size: int,
    learning_rate: float,
    epsilon: float,
    seed: int,
    gamma: float = 1.0,
    probe_keys: np.ndarray | None = None,
) -> TrainingLog:
    """Alternate sampling ``batch_size`` episodes :math:`\\epsilon`-greedily and one :func:`q_learning_update`.

    ``probe_keys`` (default: key 0) are the keys whose ``Q`` rows are recorded after every update.
    Deterministic given ``seed``.
    """
    _check_loop(n_batches, batch_size)
    rng = np.random.default_rng(seed)
    probe_keys = np.zeros(1, dtype=np.int64) if probe_keys is None else np.asarray(probe_keys)

    def behaviour(keys: np.ndarray) -> np.ndarray:
        return q.epsilon_greedy_probs(keys, epsilon)

    log = TrainingLog([], [], [])
    for _ in range(int(n_batches)):
        episodes = sample(behaviour, q.encoder, int(batch_size), rng)
        q_learning_update(q, episodes, learning_rate, gamma)
        log.mean_return.append(float(episodes.returns.mean()))
        log.reached.append(float(episodes.reached.mean()))
        log.probes.append(q.values[probe_keys].copy())
    return log


# ---------------------------------------------------------------------------------------------
# Models from counts, and exact finite-horizon evaluation


def fit_transition_model(
    keys: np.ndarray, actions: np.ndarray, next_keys: np.ndarray, n_keys: int, n_actions: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""The maximum-likelihood model :math:`\hat P(k' \mid k, a) = n(k, a, k') / n(k, a)` from transitions.

    Args:
        keys, actions, next_keys: ``(M,)`` the observed transitions (flatten a batch with its mask).
        n_keys, n_actions: table sizes.

    Returns:
        ``transitions`` ``(A, K, K)`` in the convention ``T[a, k, k']`` (rows never seen are
        uniform) and ``counts`` ``(K, A)``, the number of times each ``(k, a)`` was seen.
    """
    keys, actions, next_keys = (np.asarray(x, dtype=np.int64).reshape(-1) for x in (keys, actions, next_keys))
    if not keys.shape == actions.shape == next_keys.shape:
        raise ValueError(f"keys, actions and next_keys must have one length, got {keys.shape}, {actions.shape}, {next_keys.shape}")
    for name, x, size in (("keys", keys, n_keys), ("actions", actions, n_actions), ("next_keys", next_keys, n_keys)):
        if x.size and (x.min() < 0 or x.max() >= size):
            raise ValueError(f"{name} must be in [0, {size})")
    counts = np.zeros((n_actions, n_keys, n_keys))
    np.add.at(counts, (actions, keys, next_keys), 1.0)
    visits = counts.sum(axis=2, keepdims=True)  # (A, K, 1)
    transitions = np.where(visits > 0, counts / np.maximum(visits, 1), 1.0 / n_keys)
    return transitions, visits[..., 0].T


def evaluate_finite_horizon(
    transitions: np.ndarray, rewards: np.ndarray, policy: np.ndarray, horizon: int, absorbing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact expected return within ``horizon`` steps, and the probability of being absorbed by then.

    Backward induction over the remaining steps :math:`h = 1, \dots, H`:

    .. math::
        V_h(s) = \sum_a \pi(a \mid s) \Big(R[s, a] + \sum_{s'} T[a, s, s'] V_{h-1}(s')\Big), \qquad
        P_h(s) = \sum_a \pi(a \mid s) \sum_{s'} T[a, s, s'] P_{h-1}(s'),

    with :math:`V_0 = 0`, :math:`P_0(s) = [s \text{ absorbing}]`, and absorbing states fixed at
    :math:`V_h = 0`, :math:`P_h = 1` (no reward is collected after absorption; undiscounted).

    Args:
        transitions: ``(A, S, S)`` :math:`T[a, s, s']`.
        rewards: ``(S, A)``.
        policy: ``(..., S, A)`` action probabilities per state; a batch of policies is evaluated at once.
        horizon: :math:`H \ge 0`.
        absorbing: ``(S,)`` booleans.

    Returns:
        ``values`` and ``absorbed``, both ``(..., S)``: the value and absorption probability from each start state.
    """
    transitions, rewards, policy = (np.asarray(x, dtype=np.float64) for x in (transitions, rewards, policy))
    absorbing = np.asarray(absorbing, dtype=bool)
    n_actions, n_states = transitions.shape[0], transitions.shape[1]
    if transitions.shape != (n_actions, n_states, n_states) or rewards.shape != (n_states, n_actions):
        raise ValueError(f"transitions must be (A, S, S) and rewards (S, A); got {transitions.shape} and {rewards.shape}")
    if policy.shape[-2:] != (n_states, n_actions) or absorbing.shape != (n_states,):
        raise ValueError(f"policy must be (..., {n_states}, {n_actions}) and absorbing ({n_states},); "
                         f"got {policy.shape} and {absorbing.shape}")
    if not np.allclose(policy.sum(axis=-1), 1.0) or (policy < 0).any():
        raise ValueError("policy rows must be probability distributions over actions")
    if int(horizon) < 0:
        raise ValueError(f"horizon must be non-negative, got {horizon}")
    values = np.zeros(policy.shape[:-1])
    absorbed = np.broadcast_to(absorbing.astype(np.float64), values.shape).copy()
    for _ in range(int(horizon)):
        next_values = np.einsum("ast,...t->...sa", transitions, values)  # (..., S, A)
        next_absorbed = np.einsum("ast,...t->...sa", transitions, absorbed)
        values = np.where(absorbing, 0.0, (policy * (rewards + next_values)).sum(axis=-1))
        absorbed = np.where(absorbing, 1.0, (policy * next_absorbed).sum(axis=-1))
    return values, absorbed
