r"""Exact and approximate value iteration for two-state POMDPs such as Tiger.

With two states a belief is one number, :math:`p = b(s_0)` (for Tiger, the probability that the
tiger is behind the left door), and the belief MDP's Bellman operator is

.. math::
    (HV)(p) = \max_a \Big[ r(b, a) + \gamma \sum_o P(o \mid b, a) \, V(\tau(b, a, o)) \Big],
    \qquad r(b, a) = \sum_s b(s) R[s, a],

with :math:`\tau` the Bayes filter (:func:`seqrl.pomdp.belief_update`). Two solvers:

* :func:`solve_alpha_vectors` (exact). :math:`V_n` is the upper envelope of finitely many lines
  :math:`\alpha \cdot b` (alpha vectors). One backup builds, per action, the cross-sum over
  observations of the projected vectors
  :math:`g_{a,o}^\alpha(s) = \gamma \sum_{s'} T[a,s,s'] Z[a,s',o] \alpha(s')`,
  :math:`\alpha_a = R[\cdot, a] + \sum_o g_{a,o}^{\alpha_o}`, pruning dominated lines after each
  sum (incremental pruning). Pruning is exact: it keeps the lines on the upper envelope over
  :math:`p \in [0, 1]`.
* :func:`solve_belief_grid` (approximate): :math:`V` on a grid of :math:`p`, linearly interpolated.

Both stop when :math:`\frac{\gamma}{1-\gamma}\lVert V_{n+1} - V_n \rVert_\infty \le` ``tol``, which
bounds :math:`\lVert V_{n+1} - V^* \rVert_\infty` (of the operator each one iterates).
For Tiger the optimal policy is a pair of thresholds on :math:`p`: open the right door when
:math:`p` is high (the tiger is surely left), the left door when it is low, listen in between.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .belief import belief_update_batch
from .tiger import LISTEN, OPEN_LEFT, OPEN_RIGHT, TabularPOMDP

__all__ = [
    "upper_envelope",
    "solve_alpha_vectors",
    "solve_belief_grid",
    "AlphaVectorSolution",
    "GridSolution",
    "BeliefThresholds",
    "BeliefThresholdPolicy",
]

_TIE = 1e-12  # slopes / crossing points closer than this count as equal when pruning


def _check_two_state(model: object) -> TabularPOMDP:
    if not isinstance(model, TabularPOMDP):
        raise TypeError(f"model must be a TabularPOMDP, got {type(model).__name__}")
    if model.n_states != 2:
        raise ValueError(f"these solvers need a two-state POMDP (a belief is one number); got {model.n_states} states")
    return model


def _check_tol(tol: float) -> float:
    if not tol > 0.0:
        raise ValueError(f"tol must be positive, got {tol}")
    return float(tol)


def _as_probability(p: float | np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if np.any(~np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise ValueError("beliefs p = b(s0) must lie in [0, 1]")
    return p


# ----------------------------------------------------------------------------------------------
# policies as thresholds


@dataclass(frozen=True)
class BeliefThresholds:
    r"""A Tiger policy on :math:`p = b(\text{tiger-left})`: open-left if :math:`p < \text{lower}`,
    open-right if :math:`p > \text{upper}`, listen otherwise."""

    lower: float
    upper: float

    def actions(self, p: float | np.ndarray) -> np.ndarray:
        """Actions (same shape as ``p``) at beliefs ``p = b(tiger-left)``."""
        p = np.asarray(p, dtype=np.float64)
        return np.where(p > self.upper, OPEN_RIGHT, np.where(p < self.lower, OPEN_LEFT, LISTEN))


def _thresholds_from_regions(actions: np.ndarray, boundaries: np.ndarray) -> BeliefThresholds:
    """Thresholds from an ordered list of action regions on [0, 1] and the boundaries between them.

    ``actions`` holds the greedy action of each region from left to right (``p`` = 0 to 1) and
    ``boundaries`` the ``len(actions) - 1`` points between consecutive regions.
    """
    keep = np.r_[True, actions[1:] != actions[:-1]]  # merge neighbouring regions with the same action
    merged = actions[keep]
    cuts = boundaries[keep[1:]]
    if merged.tolist() != [OPEN_LEFT, LISTEN, OPEN_RIGHT]:
        raise ValueError(f"the policy is not of threshold form: regions (left to right) take actions {merged.tolist()}")
    return BeliefThresholds(lower=float(cuts[0]), upper=float(cuts[1]))


class BeliefThresholdPolicy:
    """A :class:`~seqrl.pomdp.simulate.BatchPolicy` that runs the Bayes filter and acts by thresholds.

    Its memory is the belief :math:`b_t`, updated from its own last action and the new
    observation; it acts with ``thresholds.actions(b_t(tiger-left))``.
    """

    def __init__(self, thresholds: BeliefThresholds, model: TabularPOMDP) -> None:
        self.thresholds = thresholds
        self.model = _check_two_state(model)
        self._beliefs = np.empty((0, 2))
        self._last_actions: np.ndarray | None = None

    def reset(self, n_episodes: int) -> None:
        self._beliefs = np.tile(self.model.initial_belief, (n_episodes, 1))  # (N, 2)
        self._last_actions = None

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._last_actions is not None:  # the first observation carries no information
            self._beliefs = belief_update_batch(self._beliefs, self._last_actions, observations, self.model)
        self._last_actions = self.thresholds.actions(self._beliefs[:, 0])
        return self._last_actions


# ----------------------------------------------------------------------------------------------
# exact value iteration with alpha vectors


def upper_envelope(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The lines on the upper envelope of :math:`\{p \mapsto \alpha_i \cdot (p, 1-p)\}` over :math:`[0, 1]`.

    A line is kept only if it is strictly above all others on an interval of positive length, so
    duplicates and lines that touch the envelope at a single point are pruned.

    Args:
        alphas: ``(n, 2)`` alpha vectors, :math:`\alpha_i = (\alpha_i(s_0), \alpha_i(s_1))`.

    Returns:
        ``(indices, breakpoints)``: the rows of ``alphas`` on the envelope from :math:`p = 0` to
        :math:`p = 1`, and the ``len(indices) - 1`` values of :math:`p` where the maximiser changes.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 2 or alphas.shape[1] != 2 or alphas.shape[0] == 0:
        raise ValueError(f"alphas must have shape (n, 2) with n >= 1, got {alphas.shape}")
    slopes = (alphas[:, 0] - alphas[:, 1]).tolist()  # value(p) = intercept + slope * p
    intercepts = alphas[:, 1].tolist()
    order = np.lexsort((-alphas[:, 1], alphas[:, 0] - alphas[:, 1])).tolist()  # slope up, then intercept down
    # Monotone stack over the real line: hull[j] is the maximiser on [starts[j], starts[j + 1]).
    hull: list[int] = []
    starts: list[float] = []
    for i in order:
        dominated = False
        while hull:
            j = hull[-1]
            if slopes[i] - slopes[j] <= _TIE:  # (nearly) parallel: the higher one wins everywhere
                if intercepts[i] <= intercepts[j]:
                    dominated = True
                    break
                hull.pop(), starts.pop()
                continue
            crossing = (intercepts[j] - intercepts[i]) / (slopes[i] - slopes[j])  # where i overtakes j
            if crossing <= starts[-1] + _TIE:  # j is never strictly on top
                hull.pop(), starts.pop()
                continue
            break
        if not dominated:
            starts.append(crossing if hull else -np.inf)
            hull.append(i)
    # keep the pieces that cover part of [0, 1] with positive length
    ends = starts[1:] + [np.inf]
    kept = [k for k in range(len(hull)) if ends[k] > _TIE and starts[k] < 1.0 - _TIE]
    return np.array([hull[k] for k in kept]), np.array([starts[k] for k in kept[1:]])


def _envelope_values(alphas: np.ndarray, p: np.ndarray) -> np.ndarray:
    """:math:`\\max_i \\alpha_i \\cdot (p, 1-p)` at each ``p``."""
    return (np.outer(p, alphas[:, 0]) + np.outer(1.0 - p, alphas[:, 1])).max(axis=1)


def _project(alphas: np.ndarray, model: TabularPOMDP, action: int, observation: int) -> np.ndarray:
    r"""``(n, 2)`` projections :math:`g(s) = \gamma \sum_{s'} T[a,s,s'] Z[a,s',o] \alpha(s')` of ``(n, 2)`` alphas."""
    weights = model.T[action] * model.Z[action, :, observation][None, :]  # (S, S')
    return model.discount * alphas @ weights.T


def _cross_sum(
    first: np.ndarray, first_breaks: np.ndarray, second: np.ndarray, second_breaks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""The envelope of :math:`\{\alpha + \beta\}` for two envelopes (vectors ordered left to right, with breakpoints).

    :math:`\max_{i,j} (\alpha_i + \beta_j) \cdot b = \max_i \alpha_i \cdot b + \max_j \beta_j \cdot b`, so on each
    interval between the merged breakpoints the sum of the two maximisers is the maximiser: the
    envelope has at most :math:`n + m - 1` pieces, found without forming all :math:`nm` sums.
    """
    cuts = np.unique(np.concatenate([[0.0, 1.0], first_breaks, second_breaks]))  # sorted
    midpoints = 0.5 * (cuts[:-1] + cuts[1:])
    sums = first[np.searchsorted(first_breaks, midpoints)] + second[np.searchsorted(second_breaks, midpoints)]
    kept, breaks = upper_envelope(sums)  # drops pieces of length ~0 and collinear neighbours
    return sums[kept], breaks


def _backup(alphas: np.ndarray, model: TabularPOMDP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One exact Bellman backup of the envelope of ``alphas``: new alphas, their actions, breakpoints."""
    candidates, labels = [], []
    for action in range(model.n_actions):
        summed, summed_breaks = model.R[:, action][None, :], np.empty(0)  # (1, 2): the reward vector
        for observation in range(model.n_observations):
            projected = _project(alphas, model, action, observation)
            kept, breaks = upper_envelope(projected)
            summed, summed_breaks = _cross_sum(summed, summed_breaks, projected[kept], breaks)
        candidates.append(summed)
        labels.append(np.full(len(summed), action))
    candidates, labels = np.concatenate(candidates), np.concatenate(labels)
    kept, breakpoints = upper_envelope(candidates)
    return candidates[kept], labels[kept], breakpoints


@dataclass(frozen=True, eq=False)
class AlphaVectorSolution:
    r"""The result of :func:`solve_alpha_vectors`.

    Attributes:
        alphas: ``(n, 2)`` alpha vectors on the envelope, ordered from :math:`p = 0` to 1.
        actions: ``(n,)`` the first action of each vector's conditional plan (the greedy action).
        breakpoints: ``(n - 1,)`` beliefs where the maximising vector changes.
        iterations: backups performed.
        bellman_residual: :math:`\lVert V_{n} - V_{n-1} \rVert_\infty` at the last backup.
        error_bound: :math:`\frac{\gamma}{1-\gamma}` times the residual, a bound on :math:`\lVert V_n - V^*\rVert_\infty`.
    """

    alphas: np.ndarray
    actions: np.ndarray
    breakpoints: np.ndarray
    iterations: int
    bellman_residual: float
    error_bound: float

    def value(self, p: float | np.ndarray) -> np.ndarray:
        r""":math:`V(b) = \max_i \alpha_i \cdot b` at beliefs ``p = b(s0)`` (any shape)."""
        p = _as_probability(p)
        return _envelope_values(self.alphas, p.ravel()).reshape(p.shape)

    def greedy_actions(self, p: float | np.ndarray) -> np.ndarray:
        """The action of the maximising alpha vector at beliefs ``p = b(s0)``."""
        p = _as_probability(p)
        values = np.outer(p.ravel(), self.alphas[:, 0]) + np.outer(1.0 - p.ravel(), self.alphas[:, 1])
        return self.actions[values.argmax(axis=1)].reshape(p.shape)

    @property
    def thresholds(self) -> BeliefThresholds:
        """The optimal policy as thresholds (Tiger's action labels)."""
        return _thresholds_from_regions(self.actions, self.breakpoints)


def solve_alpha_vectors(model: TabularPOMDP, tol: float = 1e-6, max_iterations: int = 10_000) -> AlphaVectorSolution:
    r"""Exact value iteration :math:`V_{n+1} = H V_n` from :math:`V_0 = 0` on alpha vectors.

    :math:`V_n` is the optimal :math:`n`-step value. The residual :math:`\lVert V_{n+1} - V_n\rVert_\infty`
    is exact: both functions are piecewise linear, so the largest gap is at one of their breakpoints
    or at :math:`p \in \{0, 1\}`. Iteration stops when :math:`\frac{\gamma}{1-\gamma}` times the
    residual is at most ``tol``, which guarantees :math:`\lVert V_{n+1} - V^*\rVert_\infty \le` ``tol``
    (up to pruning round-off: lines within 1e-12 of each other count as one, an error of order
    1e-10 on :math:`V^*`).

    Args:
        model: a two-state :class:`~seqrl.pomdp.TabularPOMDP`.
        tol: the guaranteed sup-norm accuracy of the value function.
        max_iterations: give up (``RuntimeError``) after this many backups.
    """
    model = _check_two_state(model)
    tol = _check_tol(tol)
    gamma = model.discount
    alphas, breakpoints = np.zeros((1, 2)), np.empty(0)
    for iteration in range(1, max_iterations + 1):
        new_alphas, actions, new_breakpoints = _backup(alphas, model)
        points = np.concatenate([[0.0, 1.0], breakpoints, new_breakpoints])
        residual = float(np.abs(_envelope_values(new_alphas, points) - _envelope_values(alphas, points)).max())
        alphas, breakpoints = new_alphas, new_breakpoints
        bound = gamma / (1.0 - gamma) * residual
        if bound <= tol:
            return AlphaVectorSolution(alphas, actions, breakpoints, iteration, residual, bound)
    raise RuntimeError(f"value iteration did not reach tol={tol} in {max_iterations} backups (bound {bound:.3g})")


# ----------------------------------------------------------------------------------------------
# approximate value iteration on a belief grid


@dataclass(frozen=True, eq=False)
class _GridDynamics:
    """Everything the grid backup needs, precomputed for beliefs ``p`` on the grid.

    ``rewards[a, i] = r(b_i, a)``; ``obs_probs[a, o, i] = P(o | b_i, a)``;
    ``posteriors[a, o, i] = tau(b_i, a, o)(s0)`` (0 where the observation is impossible).
    """

    rewards: np.ndarray  # (A, n)
    obs_probs: np.ndarray  # (A, O, n)
    posteriors: np.ndarray  # (A, O, n)


def _grid_dynamics(grid: np.ndarray, model: TabularPOMDP) -> _GridDynamics:
    beliefs = np.stack([grid, 1.0 - grid], axis=1)  # (n, 2)
    predicted = np.einsum("ns,ast->ant", beliefs, model.T)  # (A, n, S')
    joint = predicted[:, None, :, :] * np.transpose(model.Z, (0, 2, 1))[:, :, None, :]  # (A, O, n, S')
    obs_probs = joint.sum(axis=-1)  # (A, O, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        posteriors = np.where(obs_probs > 0, joint[..., 0] / obs_probs, 0.0)
    rewards = (beliefs @ model.R).T  # (A, n)
    return _GridDynamics(rewards, obs_probs, posteriors)


def _grid_q_values(values: np.ndarray, grid: np.ndarray, dynamics: _GridDynamics, gamma: float) -> np.ndarray:
    r"""``(A, n)`` :math:`Q(b_i, a) = r(b_i, a) + \gamma \sum_o P(o \mid b_i, a) \hat V(\tau(b_i, a, o))`,
    :math:`\hat V` the linear interpolation of ``values`` on ``grid``."""
    next_values = np.interp(dynamics.posteriors, grid, values)  # (A, O, n)
    return dynamics.rewards + gamma * (dynamics.obs_probs * next_values).sum(axis=1)


@dataclass(frozen=True, eq=False)
class GridSolution:
    r"""The result of :func:`solve_belief_grid`.

    Attributes:
        grid: ``(n,)`` beliefs ``p = b(s0)``, from 0 to 1.
        values: ``(n,)`` :math:`V` on the grid (interpolate linearly in between).
        q_values: ``(A, n)`` :math:`Q(b, a)` on the grid.
        iterations, bellman_residual, error_bound: as in :class:`AlphaVectorSolution`, for the
            interpolated operator (the grid's own discretisation error comes on top).
    """

    grid: np.ndarray
    values: np.ndarray
    q_values: np.ndarray
    iterations: int
    bellman_residual: float
    error_bound: float

    def value(self, p: float | np.ndarray) -> np.ndarray:
        """:math:`V` at beliefs ``p = b(s0)``, linearly interpolated."""
        return np.interp(_as_probability(p), self.grid, self.values)

    def greedy_actions(self, p: float | np.ndarray) -> np.ndarray:
        """Greedy actions at ``p``, from linearly interpolated Q-values."""
        p = _as_probability(p)
        q = np.stack([np.interp(p.ravel(), self.grid, q_a) for q_a in self.q_values])  # (A, m)
        return q.argmax(axis=0).reshape(p.shape)

    @property
    def thresholds(self) -> BeliefThresholds:
        """Thresholds where the greedy action changes, with the crossing of the two Q-values
        located by linear interpolation between neighbouring grid points."""
        actions = self.q_values.argmax(axis=0)
        changes = np.flatnonzero(actions[1:] != actions[:-1])  # between grid[i] and grid[i+1]
        boundaries = []
        for i in changes:
            before, after = actions[i], actions[i + 1]
            gap = self.q_values[before] - self.q_values[after]  # > 0 at i, <= 0 at i+1
            fraction = gap[i] / (gap[i] - gap[i + 1])
            boundaries.append(self.grid[i] + fraction * (self.grid[i + 1] - self.grid[i]))
        regions = np.r_[actions[0], actions[changes + 1]]
        return _thresholds_from_regions(regions, np.array(boundaries))


def solve_belief_grid(
    model: TabularPOMDP, n_points: int = 1001, tol: float = 1e-6, max_iterations: int = 10_000
) -> GridSolution:
    r"""Value iteration on ``n_points`` evenly spaced beliefs with linear interpolation.

    Iterates :math:`V_{n+1}(b_i) = \max_a Q_n(b_i, a)` (see :func:`_grid_q_values`) from
    :math:`V_0 = 0` until :math:`\frac{\gamma}{1-\gamma}\lVert V_{n+1} - V_n \rVert_\infty \le` ``tol``.
    Interpolating a convex function by chords overestimates it, so the grid value is slightly
    above the exact one, and converges to it as the grid is refined.
    """
    model = _check_two_state(model)
    tol = _check_tol(tol)
    if int(n_points) < 3:
        raise ValueError(f"n_points must be at least 3, got {n_points}")
    gamma = model.discount
    grid = np.linspace(0.0, 1.0, int(n_points))
    dynamics = _grid_dynamics(grid, model)
    values = np.zeros_like(grid)
    for iteration in range(1, max_iterations + 1):
        q_values = _grid_q_values(values, grid, dynamics, gamma)
        new_values = q_values.max(axis=0)
        residual = float(np.abs(new_values - values).max())
        values = new_values
        bound = gamma / (1.0 - gamma) * residual
        if bound <= tol:
            return GridSolution(grid, values, q_values, iteration, residual, bound)
    raise RuntimeError(f"grid value iteration did not reach tol={tol} in {max_iterations} iterations (bound {bound:.3g})")
