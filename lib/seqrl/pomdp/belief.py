r"""The Bayes filter: the belief :math:`b_t(s) = P(s_t = s \mid o_0, a_0, \dots, a_{t-1}, o_t)`.

The belief is a sufficient statistic of the history, so a policy on beliefs loses nothing against
a policy on whole histories. After action :math:`a` and observation :math:`o`,

.. math::
    b'(s') = \frac{Z[a, s', o] \sum_s T[a, s, s'] \, b(s)}{P(o \mid b, a)}, \qquad
    P(o \mid b, a) = \sum_{s'} Z[a, s', o] \sum_s T[a, s, s'] \, b(s).
"""
from __future__ import annotations

import numpy as np

from .tiger import TabularPOMDP

__all__ = ["belief_update", "belief_update_batch", "observation_probabilities"]

_PROB_ATOL = 1e-8


def _check_index(name: str, value: object, size: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer index, got {value!r}")
    if not 0 <= int(value) < size:
        raise ValueError(f"{name} must be in [0, {size}), got {value}")
    return int(value)


def _check_belief(belief: object, model: TabularPOMDP) -> np.ndarray:
    belief = np.asarray(belief, dtype=np.float64)
    if belief.shape != (model.n_states,):
        raise ValueError(f"belief must have shape ({model.n_states},), got {belief.shape}")
    if not np.all(np.isfinite(belief)) or np.any(belief < 0):
        raise ValueError(f"belief must hold finite, non-negative probabilities, got {belief}")
    if abs(belief.sum() - 1.0) > _PROB_ATOL:
        raise ValueError(f"belief must sum to 1, got sum {belief.sum()}")
    return belief


def _check_model(model: object) -> TabularPOMDP:
    if not isinstance(model, TabularPOMDP):
        raise TypeError(f"model must be a TabularPOMDP, got {type(model).__name__}")
    return model


def observation_probabilities(belief: np.ndarray, action: int, model: TabularPOMDP) -> np.ndarray:
    r"""The predictive distribution :math:`P(o \mid b, a) = \sum_{s'} Z[a, s', o] \sum_s T[a, s, s'] b(s)`.

    Args:
        belief: ``(S,)`` current belief.
        action: the action taken.
        model: the POMDP.

    Returns:
        ``(O,)`` probabilities of the next observation.
    """
    model = _check_model(model)
    belief = _check_belief(belief, model)
    action = _check_index("action", action, model.n_actions)
    predicted = belief @ model.T[action]  # (S,)
    return predicted @ model.Z[action]  # (O,)


def belief_update(belief: np.ndarray, action: int, observation: int, model: TabularPOMDP) -> np.ndarray:
    r"""One step of the Bayes filter, :math:`b'(s') \propto Z[a, s', o] \sum_s T[a, s, s'] b(s)`.

    Args:
        belief: ``(S,)`` current belief (non-negative, sums to 1).
        action: index of the action taken.
        observation: index of the observation received after it.
        model: the POMDP.

    Returns:
        ``(S,)`` posterior belief.

    Raises:
        ValueError: on a malformed belief or an index out of range, or if the observation has
            probability zero under the model (it could not have been received).
    """
    model = _check_model(model)
    belief = _check_belief(belief, model)
    action = _check_index("action", action, model.n_actions)
    observation = _check_index("observation", observation, model.n_observations)
    unnormalised = model.Z[action, :, observation] * (belief @ model.T[action])  # (S,)
    evidence = unnormalised.sum()
    if evidence <= 0.0:
        raise ValueError(
            f"observation {model.observation_names[observation]!r} has probability zero after action "
            f"{model.action_names[action]!r} from belief {belief}: it cannot occur under this model"
        )
    return unnormalised / evidence


def belief_update_batch(
    beliefs: np.ndarray, actions: np.ndarray, observations: np.ndarray, model: TabularPOMDP
) -> np.ndarray:
    """:func:`belief_update` for ``N`` beliefs at once, for simulators (inputs are trusted, not checked).

    Args:
        beliefs: ``(N, S)``; actions, observations: ``(N,)`` integer indices.

    Returns:
        ``(N, S)`` posteriors. A row whose observation had probability zero becomes NaN.
    """
    predicted = np.einsum("ns,nst->nt", beliefs, model.T[actions])  # (N, S)
    unnormalised = model.Z[actions, :, observations] * predicted  # (N, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        return unnormalised / unnormalised.sum(axis=1, keepdims=True)
