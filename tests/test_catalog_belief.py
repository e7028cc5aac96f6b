"""Exercise ex02 (belief_update): the reference earns full points, a hand-written filter passes, and
every typical mistake fails with its own hint."""
from __future__ import annotations

import numpy as np
import pytest

from seqrl.grading import WrongAnswer, check, get_exercise
from seqrl.grading.catalog.belief import corridor_arrays, tiger_arrays
from seqrl.pomdp import TabularPOMDP, belief_update

BELIEF = get_exercise("belief_update")


def _loop_filter(belief, action, observation, T, Z):
    """b'(s') = Z[a, s', o] sum_s T[a, s, s'] b(s) / P(o | b, a), written out with loops."""
    n_states = len(belief)
    posterior = np.zeros(n_states)
    for next_state in range(n_states):
        predicted = sum(T[action, state, next_state] * belief[state] for state in range(n_states))
        posterior[next_state] = Z[action, next_state, observation] * predicted
    return posterior / posterior.sum()


def test_reference_gets_full_points(capsys):
    result = check("belief_update", BELIEF.reference)
    assert result.ok and result.points == result.max_points == len(BELIEF.cases) == 8
    assert "8/8 cases passed" in capsys.readouterr().out


def test_a_hand_written_loop_filter_passes():
    assert check("belief_update", _loop_filter, verbose=False).ok


def test_reference_matches_bayes_rule_by_hand():
    T, Z = corridor_arrays()
    # from cell 0, step right (80 %): predicted (0.2, 0.8, 0); the door sensor: (0.1, 0.9, 0.3)
    expected = np.array([0.2 * 0.1, 0.8 * 0.9, 0.0]) / (0.2 * 0.1 + 0.8 * 0.9)
    np.testing.assert_allclose(BELIEF.reference(np.array([1.0, 0.0, 0.0]), 1, 0, T, Z), expected, atol=1e-12)
    T, Z = tiger_arrays()
    np.testing.assert_allclose(BELIEF.reference(np.array([0.5, 0.5]), 0, 0, T, Z), [0.85, 0.15], atol=1e-12)


def test_the_corridor_is_a_valid_pomdp_whose_moves_matter():
    T, Z = corridor_arrays()
    TabularPOMDP(T, Z, np.zeros((3, 2)), np.full(3, 1 / 3), 0.9, 0)  # validates shapes and probabilities
    assert not np.allclose(T[1], np.eye(3)) and not np.allclose(T[1], T[1].T)  # moves, and not symmetrically
    assert not np.allclose(Z[0].sum(axis=0), 1.0)  # a likelihood column is not a distribution over states


def test_skipping_the_prediction_only_shows_outside_tigers_listening():
    """On Tiger's listen cases (T = identity) the mistake is invisible; the other cases catch it."""
    wrong = next(w for w in BELIEF.wrong_answers if w.name.startswith("no prediction"))
    result = check("belief_update", wrong.fn, raise_on_failure=False, verbose=False)
    listening = [case.passed for case in result.cases if "listen" in case.description]
    assert listening and all(listening) and not result.ok


@pytest.mark.parametrize("wrong", BELIEF.wrong_answers, ids=lambda wrong: wrong.name)
def test_each_wrong_answer_fails_with_its_own_hint(wrong: WrongAnswer, capsys):
    with pytest.raises(AssertionError, match=r"belief_update: \d/8 cases passed"):
        check("belief_update", wrong.fn)
    out = capsys.readouterr().out
    assert f"looks like: {wrong.name}: {wrong.hint}" in out
    for other in BELIEF.wrong_answers:
        if other is not wrong:
            assert other.hint not in out, f"{wrong.name!r} also got the hint of {other.name!r}"
    result = check("belief_update", wrong.fn, raise_on_failure=False, verbose=False)
    assert result.diagnosis == [wrong.name]


def test_the_mistakes_the_exercise_promises_are_all_there():
    names = " | ".join(wrong.name for wrong in BELIEF.wrong_answers)
    for phrase in ("not normalised", "wrong observation", "no prediction", "previous state", "before multiplying"):
        assert phrase in names


def test_the_reference_is_the_library_filter():
    T, Z = tiger_arrays()
    from seqrl.pomdp import TigerPOMDP

    belief = np.array([0.3, 0.7])
    np.testing.assert_array_equal(BELIEF.reference(belief, 0, 1, T, Z), belief_update(belief, 0, 1, TigerPOMDP()))
