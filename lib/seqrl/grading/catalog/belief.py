r"""Exercise ex02: the Bayes belief filter of a tabular POMDP.

The student writes ``belief_update(belief, action, observation, T, Z)`` with the conventions of
:mod:`seqrl.pomdp` (``T[a, s, s']``, ``Z[a, s', o]``), returning

.. math::
    b'(s') = \frac{Z[a, s', o] \sum_s T[a, s, s'] \, b(s)}{\sum_{s''} Z[a, s'', o] \sum_s T[a, s, s''] \, b(s)} .

The cases run on the Tiger problem, where listening leaves the state where it is (so several
mistakes go unnoticed there), and on a three-cell corridor whose transitions are neither the
identity nor symmetric, so that the prediction step, its direction, and which state emits the
observation all change the answer.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..checks import Case, Exercise, WrongAnswer

__all__ = ["EXERCISES", "corridor_arrays", "tiger_arrays"]


# ---------------------------------------------------------------------------------------------
# the two POMDPs of the cases, as plain arrays


def tiger_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(T, Z)`` of the Tiger problem: actions listen, open-left, open-right; observations
    hear-left, hear-right, reset; states tiger-left, tiger-right."""
    from seqrl.pomdp import TigerPOMDP

    model = TigerPOMDP()
    return np.array(model.T), np.array(model.Z)


def corridor_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(T, Z)`` of a robot in a corridor of three cells with a door at the middle cell.

    Actions: 0 stay (the robot drifts back one cell with probability 0.1), 1 step right (succeeds
    with probability 0.8, the last cell is a wall). Observations: 0 "door", 1 "no door"; the door
    sensor fires with probability 0.1, 0.9, 0.3 in cells 0, 1, 2.
    """
    T = np.array(
        [
            [[1.0, 0.0, 0.0], [0.1, 0.9, 0.0], [0.0, 0.1, 0.9]],  # stay (drifting left)
            [[0.2, 0.8, 0.0], [0.0, 0.2, 0.8], [0.0, 0.0, 1.0]],  # step right
        ]
    )
    door = np.array([0.1, 0.9, 0.3])  # P(door | s')
    Z = np.stack([np.stack([door, 1.0 - door], axis=1)] * 2)  # (A, S', O)
    return T, Z


# ---------------------------------------------------------------------------------------------
# the reference and the typical mistakes


def _belief_reference(belief: np.ndarray, action: int, observation: int, T: np.ndarray, Z: np.ndarray) -> np.ndarray:
    from seqrl.pomdp import TabularPOMDP, belief_update

    n_actions, n_states = T.shape[0], T.shape[1]
    model = TabularPOMDP(T, Z, np.zeros((n_states, n_actions)), np.full(n_states, 1.0 / n_states), 0.0, 0)
    return belief_update(belief, action, observation, model)


def _predicted(belief: np.ndarray, action: int, T: np.ndarray) -> np.ndarray:
    return np.asarray(belief, dtype=float) @ T[action]  # (S',): sum_s T[a, s, s'] b(s)


def _normalised(vector: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return vector / vector.sum()


def _unnormalised(belief, action, observation, T, Z):
    """Z[a, s', o] * sum_s T[a, s, s'] b(s), never divided by P(o | b, a)."""
    return Z[action, :, observation] * _predicted(belief, action, T)


def _opposite_observation(belief, action, observation, T, Z):
    """The likelihood of the opposite observation (0 and 1 swapped: hear-left for hear-right, door for no-door)."""
    opposite = {0: 1, 1: 0}.get(int(observation), int(observation))
    return _normalised(Z[action, :, opposite] * _predicted(belief, action, T))


def _no_prediction(belief, action, observation, T, Z):
    """b'(s') ∝ Z[a, s', o] b(s'): the state is assumed not to move."""
    return _normalised(Z[action, :, observation] * np.asarray(belief, dtype=float))


def _likelihood_of_previous_state(belief, action, observation, T, Z):
    """b'(s') ∝ sum_s T[a, s, s'] Z[a, s, o] b(s): the observation weighs the state before the move."""
    return _normalised((Z[action, :, observation] * np.asarray(belief, dtype=float)) @ T[action])


def _normalised_before_multiplying(belief, action, observation, T, Z):
    """The prediction and the likelihood each normalised, their product not."""
    return _normalised(_predicted(belief, action, T)) * _normalised(Z[action, :, observation])


def _transition_transposed(belief, action, observation, T, Z):
    """Prediction sum_s' T[a, s, s'] b(s'), i.e. T[a] @ b instead of b @ T[a]."""
    return _normalised(Z[action, :, observation] * (T[action] @ np.asarray(belief, dtype=float)))


def belief_update_exercise() -> Exercise:
    """ex02: ``belief_update(belief, action, observation, T, Z)`` for a tabular POMDP."""
    tiger_T, tiger_Z = tiger_arrays()
    corridor_T, corridor_Z = corridor_arrays()
    tiger_actions, tiger_observations = ("listen", "open-left", "open-right"), ("hear-left", "hear-right", "reset")
    corridor_actions, corridor_observations = ("stay", "step-right"), ("door", "no-door")

    def tiger(belief: list[float], action: int, observation: int) -> Case:
        shown = ", ".join(f"{b:g}" for b in belief)
        return Case(
            (np.array(belief), action, observation, tiger_T, tiger_Z), {},
            f"Tiger: b = ({shown}), {tiger_actions[action]}, then {tiger_observations[observation]}",
        )

    def corridor(belief: list[float], action: int, observation: int) -> Case:
        shown = ", ".join(f"{b:g}" for b in belief)
        return Case(
            (np.array(belief), action, observation, corridor_T, corridor_Z), {},
            f"corridor: b = ({shown}), {corridor_actions[action]}, then {corridor_observations[observation]}",
        )

    cases = [
        tiger([0.5, 0.5], 0, 0),
        tiger([0.85, 0.15], 0, 0),
        tiger([0.3, 0.7], 0, 1),
        tiger([0.97, 0.03], 1, 2),
        corridor([1.0, 0.0, 0.0], 1, 0),
        corridor([1 / 3, 1 / 3, 1 / 3], 1, 1),
        corridor([0.2, 0.5, 0.3], 0, 0),
        corridor([0.6, 0.3, 0.1], 1, 0),
    ]
    wrong_answers = [
        WrongAnswer(
            "belief not normalised",
            _unnormalised,
            "divide by the evidence P(o | b, a) = sum over s' of Z[a, s', o] * predicted[s']: the new belief "
            "is a distribution and must sum to 1.",
        ),
        WrongAnswer(
            "likelihood of the wrong observation",
            _opposite_observation,
            "weigh each next state by the likelihood of the observation actually received, Z[action, :, observation] "
            "(the column for o in Z[a, s', o]), not another column.",
        ),
        WrongAnswer(
            "no prediction step (transitions ignored)",
            _no_prediction,
            "the state may move when the agent acts: first predict, predicted[s'] = sum_s T[a, s, s'] b(s) "
            "(belief @ T[action]), then multiply by the likelihood. Tiger's listening hides this mistake; "
            "opening a door and the corridor do not.",
        ),
        WrongAnswer(
            "likelihood applied to the previous state",
            _likelihood_of_previous_state,
            "the observation is emitted by the NEXT state s': multiply the predicted belief by Z[a, s', o], "
            "i.e. Z[action, :, observation] * (belief @ T[action]), not (Z[action, :, observation] * belief) @ T[action].",
        ),
        WrongAnswer(
            "normalised before multiplying",
            _normalised_before_multiplying,
            "normalise the product, not its factors: the product of a normalised prediction and a normalised "
            "likelihood does not sum to 1. Multiply first, then divide by the sum of the product.",
        ),
        WrongAnswer(
            "transition matrix transposed",
            _transition_transposed,
            "T[a, s, s'] has the current state first, so the prediction sum_s T[a, s, s'] b(s) is belief @ T[action] "
            "(equivalently T[action].T @ belief), not T[action] @ belief.",
        ),
    ]
    return Exercise("belief_update", _belief_reference, cases, wrong_answers)


EXERCISES: dict[str, Callable[[], Exercise]] = {
    "belief_update": belief_update_exercise,
}
