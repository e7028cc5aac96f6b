r"""Policies with little memory: the latest observation, or a window of the last ``k`` observations.

What does it cost to drop the belief? A *window policy* :math:`\pi(a \mid w_t)` sees only
:math:`w_t`, the last ``k`` observations since the most recent reset observation (the one seen at
the start and after opening a door). With ``k = 1`` it is a memoryless policy :math:`\pi(a \mid o_t)`.
Cutting the window at a reset loses nothing: the reset re-draws the hidden state from :math:`b_0`,
so older observations say nothing about it, and one can show that conditioning on them cannot
raise the optimal value.

**Exact evaluation.** Under a window policy the pair :math:`(s_t, w_t)` is a Markov chain,

.. math::
    P_\pi[(s, w), (s', w')] = \sum_a \pi(a \mid w)\, T[a, s, s'] \sum_o Z[a, s', o]\, [\,w' = \mathrm{next}(w, o)\,],
    \qquad r_\pi(s, w) = \sum_a \pi(a \mid w) R[s, a],

so :math:`V_\pi = (I - \gamma P_\pi)^{-1} r_\pi` and the value from the start is
:math:`\sum_s b_0(s) V_\pi(s, w_0)` (:func:`evaluate_window_policies`, batched over policies).

**Exact search over deterministic windows** (:func:`best_window_policy`). Windows that contain the
reset observation form a tree rooted at :math:`w_0`; the others (``k`` informative observations) are
*recurrent*. Every reset returns to :math:`w_0` with :math:`s \sim b_0`, so with :math:`A`, :math:`B`
the expected discounted reward and :math:`\mathbb E[\gamma^\tau]` up to the first return time
:math:`\tau`, the value is the renewal ratio :math:`V = A / (1 - B)`. The tree part of a policy sends
mass into recurrent windows with discounted weights :math:`W(s, c)`, and the recurrent part pays
:math:`A_C(s, c)`, :math:`B_C(s, c)` from there, so

.. math::
    V(\text{tree}, \text{rec}) = \frac{A_T + W \cdot A_C}{1 - B_T - W \cdot B_C}:

all :math:`|A|^{n_T} \times |A|^{n_C}` pairs are scored by two matrix products, after one batched
linear solve per part (``k = 3``: 14 million policies in about a second).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .simulate import sample_categorical
from .tiger import TabularPOMDP

__all__ = [
    "WindowSpace",
    "WindowPolicy",
    "WindowPolicySolution",
    "evaluate_window_policies",
    "best_window_policy",
    "best_memoryless_policy",
]

_MAX_TABLES = 100_000  # per part of the split search; k = 3 for Tiger needs 3^8 = 6561


def _check_restarts(model: TabularPOMDP) -> None:
    """The window construction needs a reset observation that exactly marks a restart from b0."""
    reset = model.initial_observation
    for action in range(model.n_actions):
        emitted = model.Z[action, :, reset]
        if np.allclose(emitted, 0.0):
            continue
        if not np.allclose(emitted, 1.0) or not np.allclose(model.T[action], model.initial_belief[None, :]):
            raise ValueError(
                f"window policies need the initial observation {model.observation_names[reset]!r} to mean "
                f"'restarted from the initial belief'; action {model.action_names[action]!r} breaks this"
            )


class WindowSpace:
    """The windows of the last ``k`` observations since a reset, and how they follow each other.

    Attributes:
        k: the window length.
        windows: tuples of observation indices; the tree windows (starting with the reset
            observation, root ``(reset,)`` first) come before the ``n_recurrent`` recurrent ones.
        next_window: ``(W, O)`` index of the window after observing ``o`` in window ``w``.
        n_tree, n_recurrent: sizes of the two parts.
    """

    def __init__(self, k: int, model: TabularPOMDP) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"the window length k must be a positive integer, got {k!r}")
        if not isinstance(model, TabularPOMDP):
            raise TypeError(f"model must be a TabularPOMDP, got {type(model).__name__}")
        _check_restarts(model)
        self.k, self.model = int(k), model
        reset = model.initial_observation
        informative = [o for o in range(model.n_observations) if o != reset]
        tree = [(reset, *tail) for depth in range(self.k) for tail in itertools.product(informative, repeat=depth)]
        recurrent = list(itertools.product(informative, repeat=self.k))
        self.windows: tuple[tuple[int, ...], ...] = tuple(tree + recurrent)
        self.n_tree, self.n_recurrent = len(tree), len(recurrent)
        index = {window: i for i, window in enumerate(self.windows)}
        self.next_window = np.array(
            [[0 if o == reset else index[(window + (o,))[-self.k:]] for o in range(model.n_observations)]
             for window in self.windows]
        )  # (W, O)
        # K[a, s, w, s', w'] = T[a, s, s'] * sum_o Z[a, s', o] [next(w, o) = w']
        moves = np.eye(len(self.windows))[self.next_window]  # (W, O, W')
        self.kernel = np.einsum("ast,ato,wov->aswtv", model.T, model.Z, moves)

    def __len__(self) -> int:
        return len(self.windows)

    def names(self, window: tuple[int, ...]) -> str:
        """A window as text, e.g. ``'reset,hear-left'``."""
        return ",".join(self.model.observation_names[o] for o in window)


def _check_action_probs(action_probs: np.ndarray, space: WindowSpace) -> np.ndarray:
    probs = np.asarray(action_probs, dtype=np.float64)
    shape = (len(space), space.model.n_actions)
    if probs.shape[-2:] != shape or probs.ndim not in (2, 3):
        raise ValueError(f"action_probs must have shape (W, A) = {shape} or (N, W, A), got {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or not np.allclose(probs.sum(-1), 1.0, atol=1e-8):
        raise ValueError("action_probs must be non-negative with rows summing to 1")
    return probs


def _one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    return np.eye(n_actions)[actions]


def _chain(probs: np.ndarray, space: WindowSpace) -> tuple[np.ndarray, np.ndarray]:
    """``(N, S*W, S*W)`` transition matrices and ``(N, S*W)`` rewards of the (state, window) chains."""
    n, n_states, n_windows = len(probs), space.model.n_states, len(space)
    transitions = np.einsum("nwa,aswtv->nswtv", probs, space.kernel).reshape(n, n_states * n_windows, -1)
    rewards = np.einsum("nwa,sa->nsw", probs, space.model.R).reshape(n, -1)
    return transitions, rewards


def evaluate_window_policies(action_probs: np.ndarray, space: WindowSpace) -> np.ndarray:
    r"""Exact values :math:`\sum_s b_0(s) V_\pi(s, w_0)`, :math:`V_\pi = (I - \gamma P_\pi)^{-1} r_\pi`.

    Args:
        action_probs: ``(W, A)`` or ``(N, W, A)`` policies :math:`\pi(a \mid w)`, windows ordered as
            in ``space.windows``.
        space: the :class:`WindowSpace`.

    Returns:
        A float for one policy, ``(N,)`` values for ``N``.
    """
    probs = _check_action_probs(action_probs, space)
    single = probs.ndim == 2
    probs = probs[None] if single else probs
    transitions, rewards = _chain(probs, space)
    identity = np.eye(transitions.shape[-1])
    values = np.linalg.solve(identity - space.model.discount * transitions, rewards[..., None])[..., 0]
    values = values.reshape(len(probs), space.model.n_states, len(space))[:, :, 0] @ space.model.initial_belief
    return float(values[0]) if single else values


def _all_tables(n_windows: int, n_actions: int) -> np.ndarray:
    """``(n_actions ** n_windows, n_windows)``: every deterministic table, as action indices."""
    n_tables = n_actions**n_windows
    if n_tables > _MAX_TABLES:
        raise ValueError(f"{n_tables} deterministic tables are too many to enumerate (limit {_MAX_TABLES})")
    return (np.arange(n_tables)[:, None] // n_actions ** np.arange(n_windows)[None, :]) % n_actions


def _absorbed(tables: np.ndarray, rows: np.ndarray, space: WindowSpace, exits: list[np.ndarray]) -> np.ndarray:
    r"""Discounted quantities until the chain leaves the windows ``rows``, for each deterministic table.

    Solves :math:`(I - \gamma P_{rows,rows}) X = [\,r,\ \gamma P_{rows,e} \text{ for each exit set } e\,]`,
    where a transition into the root window always counts as leaving.

    Returns:
        ``(N, S, len(rows), 1 + total exit columns)``: column 0 the expected discounted reward, then
        the discounted probability of leaving into each ``(s', window)`` of each exit set.
    """
    model, gamma = space.model, space.model.discount
    probs = _one_hot(tables, model.n_actions)  # (N, n, A)
    kernel = space.kernel[:, :, rows]  # (A, S, n, S', W)
    stay = kernel[..., rows].copy()  # (A, S, n, S', n)
    stay[..., rows == 0] = 0.0  # a return to the root window ends the stretch: it is an exit
    n, size = len(tables), model.n_states * len(rows)
    transitions = np.einsum("nwa,aswtv->nswtv", probs, stay).reshape(n, size, size)
    columns = [np.einsum("nwa,sa->nsw", probs, model.R).reshape(n, size, 1)]
    for targets in exits:
        leave = np.einsum("nwa,aswtv->nswtv", probs, kernel[..., targets])  # (N, S, n, S', e)
        columns.append(gamma * leave.reshape(n, size, -1))
    rhs = np.concatenate(columns, axis=-1)
    solved = np.linalg.solve(np.eye(size) - gamma * transitions, rhs)
    return solved.reshape(n, model.n_states, len(rows), -1)


@dataclass(frozen=True, eq=False)
class WindowPolicySolution:
    """The best window policy found, with its exact value from the initial belief.

    Attributes:
        space: the :class:`WindowSpace` (``space.windows`` orders the rows of ``action_probs``).
        action_probs: ``(W, A)`` :math:`\\pi(a \\mid w)` (one-hot rows for deterministic policies).
        value: exact :math:`\\sum_s b_0(s) V_\\pi(s, w_0)`.
    """

    space: WindowSpace
    action_probs: np.ndarray
    value: float

    def table(self) -> dict[str, str]:
        """The policy as text, ``{window: action}`` (or ``{window: 'p*action + ...'}`` when stochastic)."""
        names = self.space.model.action_names
        out = {}
        for window, probs in zip(self.space.windows, self.action_probs):
            terms = [f"{p:.3f}*{name}" for p, name in zip(probs, names) if p > 1e-3]
            out[self.space.names(window)] = names[int(probs.argmax())] if probs.max() > 1 - 1e-9 else " + ".join(terms)
        return out

    def policy(self) -> WindowPolicy:
        """This policy as a :class:`WindowPolicy`, for :func:`~seqrl.pomdp.simulate`."""
        return WindowPolicy(self.action_probs, self.space)


def best_window_policy(k: int, model: TabularPOMDP, chunk: int = 256) -> WindowPolicySolution:
    """The best deterministic policy on windows of the last ``k`` observations, by exact search.

    Scores every pair (tree table, recurrent table) with the renewal ratio of the module docstring;
    ``chunk`` tree tables are scored at a time to bound memory. The winner is re-evaluated directly
    with :func:`evaluate_window_policies`.
    """
    space = WindowSpace(k, model)
    tree_rows = np.arange(space.n_tree)
    rec_rows = np.arange(space.n_tree, len(space))
    tree_tables = _all_tables(space.n_tree, model.n_actions)  # (N_T, n_T)
    rec_tables = _all_tables(space.n_recurrent, model.n_actions)  # (N_C, n_C)
    b0 = model.initial_belief

    rec = _absorbed(rec_tables, rec_rows, space, [np.array([0])])  # (N_C, S, n_C, 1 + S)
    rec_reward = rec[..., 0].reshape(len(rec_tables), -1)  # A_C, (N_C, S*n_C)
    rec_return = rec[..., 1:].sum(-1).reshape(len(rec_tables), -1)  # B_C: back to root, any s'

    tree = _absorbed(tree_tables, tree_rows, space, [np.array([0]), rec_rows])  # (N_T, S, n_T, 1 + S + S*n_C)
    at_root = np.einsum("s,nsc->nc", b0, tree[:, :, 0, :])  # start at the root with s ~ b0
    tree_reward, tree_return = at_root[:, 0], at_root[:, 1 : 1 + model.n_states].sum(-1)
    into_rec = at_root[:, 1 + model.n_states :]  # W, (N_T, S*n_C), same (s, c) order as A_C

    best = (-np.inf, 0, 0)
    for start in range(0, len(tree_tables), chunk):
        rows = slice(start, start + chunk)
        numerator = tree_reward[rows, None] + into_rec[rows] @ rec_reward.T  # (chunk, N_C)
        denominator = 1.0 - tree_return[rows, None] - into_rec[rows] @ rec_return.T
        values = numerator / denominator
        i, j = np.unravel_index(values.argmax(), values.shape)
        if values[i, j] > best[0]:
            best = (values[i, j], start + i, j)
    table = np.concatenate([tree_tables[best[1]], rec_tables[best[2]]])
    probs = _one_hot(table, model.n_actions)
    return WindowPolicySolution(space, probs, evaluate_window_policies(probs, space))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _value_and_gradient(logits: np.ndarray, space: WindowSpace) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact values and their gradients for ``(N, W, A)`` softmax logits (the policy-gradient theorem).

    .. math::
        \frac{\partial V}{\partial \theta_{w,a}} = \sum_s d(s, w)\, \pi(a \mid w)
            \Big(Q(s, w, a) - \sum_{a'} \pi(a' \mid w) Q(s, w, a')\Big),

    with :math:`d^\top = \mu_0^\top (I - \gamma P_\pi)^{-1}` the discounted occupancy of the chain
    started at :math:`\mu_0(s, w_0) = b_0(s)`, and
    :math:`Q(s, w, a) = R[s, a] + \gamma \sum_{s', w'} K[a, s, w, s', w'] V(s', w')`.
    """
    model, gamma = space.model, space.model.discount
    n, n_states, n_windows = len(logits), model.n_states, len(space)
    probs = _softmax(logits)  # (N, W, A)
    transitions, rewards = _chain(probs, space)
    system = np.eye(n_states * n_windows) - gamma * transitions  # (N, SW, SW)
    values = np.linalg.solve(system, rewards[..., None])[..., 0]  # (N, SW)
    start = np.zeros((n_states, n_windows))
    start[:, 0] = model.initial_belief
    start = np.broadcast_to(start.reshape(-1), (n, n_states * n_windows))
    occupancy = np.linalg.solve(np.swapaxes(system, 1, 2), start[..., None]).reshape(n, n_states, n_windows)
    next_values = np.einsum("aswtv,ntv->nswa", space.kernel, values.reshape(n, n_states, n_windows))
    q_values = model.R[None, :, None, :] + gamma * next_values  # (N, S, W, A)
    advantages = q_values - np.einsum("nwa,nswa->nsw", probs, q_values)[..., None]
    gradients = np.einsum("nsw,nwa,nswa->nwa", occupancy, probs, advantages)
    return (start * values).sum(axis=1), gradients


def best_memoryless_policy(
    model: TabularPOMDP, n_restarts: int = 32, steps: int = 1000, learning_rate: float = 0.1, seed: int = 0
) -> WindowPolicySolution:
    r"""The best stochastic memoryless policy :math:`\pi(a \mid o_t)`, by gradient ascent on its exact value.

    Runs Adam on softmax logits with the exact gradient of :func:`_value_and_gradient`, from
    ``n_restarts`` random starts and the best deterministic memoryless policy, all in one batch.
    The value is not concave in the policy, so this is a search; the result is never worse than
    the best deterministic memoryless policy.
    """
    if n_restarts < 0 or steps < 0 or not learning_rate > 0:
        raise ValueError("n_restarts and steps must be non-negative and learning_rate positive")
    space = WindowSpace(1, model)
    deterministic = best_window_policy(1, model)
    rng = np.random.default_rng(seed)
    logits = np.concatenate([
        2.0 * rng.standard_normal((n_restarts, len(space), model.n_actions)),
        8.0 * deterministic.action_probs[None],
    ])
    first_moment, second_moment = np.zeros_like(logits), np.zeros_like(logits)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):  # Adam, ascending
        _, gradients = _value_and_gradient(logits, space)
        first_moment = beta1 * first_moment + (1 - beta1) * gradients
        second_moment = beta2 * second_moment + (1 - beta2) * gradients**2
        corrected = first_moment / (1 - beta1**step) / (np.sqrt(second_moment / (1 - beta2**step)) + eps)
        logits = logits + learning_rate * corrected
    probs = _softmax(logits)
    values = evaluate_window_policies(probs, space)
    best = int(values.argmax())
    if values[best] <= deterministic.value:
        return deterministic
    return WindowPolicySolution(space, probs[best], float(values[best]))


class WindowPolicy:
    """A :class:`~seqrl.pomdp.simulate.BatchPolicy` acting on the window of recent observations."""

    def __init__(self, action_probs: np.ndarray, space: WindowSpace) -> None:
        self.action_probs = _check_action_probs(action_probs, space)
        if self.action_probs.ndim != 2:
            raise ValueError("a WindowPolicy holds one (W, A) table")
        self.space = space
        self._windows = np.zeros(0, dtype=int)

    def reset(self, n_episodes: int) -> None:
        self._windows = np.zeros(n_episodes, dtype=int)  # everyone at the root window

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self._windows = self.space.next_window[self._windows, observations]  # the first (reset) keeps the root
        return sample_categorical(self.action_probs[self._windows], rng)
