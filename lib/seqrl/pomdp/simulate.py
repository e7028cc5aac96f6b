r"""A vectorised simulator: many episodes of a tabular POMDP at once, with numpy.

Each of ``N`` episodes runs for ``horizon`` steps and scores its discounted return
:math:`G = \sum_{t=0}^{H-1} \gamma^t r_t`. With :math:`\gamma^H` negligible, the mean of :math:`G`
estimates the policy's value from :math:`b_0`, with standard error :math:`\mathrm{sd}(G)/\sqrt N`.

A policy is a :class:`BatchPolicy`: it sees only observations (its own memory, a belief or a window
of observations, lives inside it), which is the point of the chapter: the policy reads a history.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .tiger import TabularPOMDP, TigerPOMDP

__all__ = ["BatchPolicy", "simulate", "sample_categorical"]


@runtime_checkable
class BatchPolicy(Protocol):
    """A policy acting in ``N`` episodes at once; it keeps whatever memory of the history it needs."""

    def reset(self, n_episodes: int) -> None:
        """Forget everything: ``n_episodes`` fresh episodes start."""

    def act(self, observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(N,)`` actions given the ``(N,)`` latest observations (the first call gets the initial ones)."""


def sample_categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of ``probs`` (shape ``(N, K)``, rows summing to 1); returns ``(N,)`` indices."""
    cdf = np.cumsum(probs, axis=1)  # (N, K)
    draws = (rng.random((probs.shape[0], 1)) >= cdf).sum(axis=1)
    return np.minimum(draws, probs.shape[1] - 1)  # guards against cdf[-1] = 1 - 1e-16


def simulate(
    policy: BatchPolicy,
    n_episodes: int,
    horizon: int,
    seed: int,
    model: TabularPOMDP | None = None,
) -> np.ndarray:
    r"""Discounted returns :math:`G^{(i)} = \sum_{t<H} \gamma^t r^{(i)}_t` of ``n_episodes`` episodes.

    Deterministic given ``seed``: the environment and the policy draw from one
    ``numpy.random.Generator``.

    Args:
        policy: a :class:`BatchPolicy`.
        n_episodes: ``N``, episodes simulated in parallel.
        horizon: ``H``, steps per episode.
        seed: seed of the random generator.
        model: the POMDP (default: :class:`TigerPOMDP`).

    Returns:
        ``(N,)`` float64 discounted returns.
    """
    model = model if model is not None else TigerPOMDP()
    if not isinstance(model, TabularPOMDP):
        raise TypeError(f"model must be a TabularPOMDP, got {type(model).__name__}")
    if not isinstance(policy, BatchPolicy):
        raise TypeError(f"policy must have reset(n_episodes) and act(observations, rng), got {type(policy).__name__}")
    if int(n_episodes) < 1 or int(horizon) < 1:
        raise ValueError(f"n_episodes and horizon must be positive, got {n_episodes} and {horizon}")
    n_episodes, horizon = int(n_episodes), int(horizon)
    rng = np.random.default_rng(seed)

    states = sample_categorical(np.broadcast_to(model.initial_belief, (n_episodes, model.n_states)), rng)
    observations = np.full(n_episodes, model.initial_observation)
    returns = np.zeros(n_episodes)
    policy.reset(n_episodes)
    for t in range(horizon):
        actions = np.asarray(policy.act(observations, rng))
        if actions.shape != (n_episodes,):
            raise ValueError(f"policy.act must return ({n_episodes},) actions, got shape {actions.shape}")
        returns += model.discount**t * model.R[states, actions]
        states = sample_categorical(model.T[actions, states], rng)  # s' ~ T[a, s, .]
        observations = sample_categorical(model.Z[actions, states], rng)  # o ~ Z[a, s', .]
    return returns
