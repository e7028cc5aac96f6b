"""Exercise ex07 (offline RL): the references earn full points, hand-written versions pass, and every
typical mistake fails with its own hint."""
from __future__ import annotations

import pytest
import torch

from seqrl.grading import check, get_exercise
from seqrl.grading.catalog.offline import two_turn_batch

NAMES = ("expectile_loss", "ilql_targets", "perturbed_logits")
WRONG = [(name, wrong) for name in NAMES for wrong in get_exercise(name).wrong_answers]


@pytest.mark.parametrize("name", NAMES)
def test_reference_gets_full_points(name):
    exercise = get_exercise(name)
    result = check(name, exercise.reference, verbose=False)
    assert result.ok and result.points == result.max_points == len(exercise.cases)


@pytest.mark.parametrize("name,wrong", WRONG, ids=lambda x: x if isinstance(x, str) else x.name)
def test_each_wrong_answer_fails_with_its_own_hint(name, wrong, capsys):
    with pytest.raises(AssertionError, match=rf"{name}: \d/\d cases passed"):
        check(name, wrong.fn)
    out = capsys.readouterr().out
    assert f"looks like: {wrong.name}: {wrong.hint}" in out
    for other in get_exercise(name).wrong_answers:
        if other is not wrong:
            assert other.hint not in out, f"{wrong.name!r} also got the hint of {other.name!r}"
    result = check(name, wrong.fn, raise_on_failure=False, verbose=False)
    assert result.passed < result.total and result.diagnosis == [wrong.name]


def test_hand_written_versions_pass():
    def expectile(diff, tau, mask):
        weight = torch.where(diff >= 0, torch.full_like(diff, tau), torch.full_like(diff, 1 - tau))
        return (weight * diff**2 * mask).sum() / mask.sum()

    def perturbed(bc_logits, q, v, beta):
        return bc_logits - bc_logits.logsumexp(-1, keepdim=True) + beta * (q - v.unsqueeze(-1))

    assert check("expectile_loss", expectile, verbose=False).ok
    assert check("perturbed_logits", perturbed, verbose=False).ok


def test_ilql_targets_reference_matches_hand_values():
    rewards, values, q_online, q_target, action_mask, mask, terminal = two_turn_batch((True,), seed=0)
    q_targets, v_targets = get_exercise("ilql_targets").reference(rewards, values, q_online, q_target, action_mask, mask, terminal, 0.9)
    assert q_targets[0, 3].item() == pytest.approx(-1 + 0.9 * values[0, 6].item())  # across the reply
    assert q_targets[0, 2].item() == pytest.approx(0.9 * values[0, 2].item())  # inside the utterance
    assert q_targets[0, 8].item() == -1.0  # terminal: no bootstrap
    assert v_targets[0, 7].item() == min(q_target[0, 0, 7].item(), q_target[1, 0, 7].item())
