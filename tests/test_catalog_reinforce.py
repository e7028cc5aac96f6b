"""Exercise ex03 (the REINFORCE surrogate loss): the reference earns full points, every typical mistake
fails with its own hint, and the check compares the loss's gradients, not only its value."""
from __future__ import annotations

import pytest
import torch

from seqrl.grading import WrongAnswer, check, get_exercise
from seqrl.grading.catalog.reinforce import loss_and_gradients
from seqrl.rl import discounted_returns, reinforce_loss

EXERCISE = get_exercise("reinforce_gradient")
N_CASES = len(EXERCISE.cases)


def library_loss(logprobs, rewards, mask, gamma, baseline):
    return reinforce_loss(logprobs, discounted_returns(rewards, gamma) - baseline, mask)


def loop_loss(logprobs, rewards, mask, gamma, baseline):
    """A student's version: a Python loop per episode, in float32, the baseline detached on its own."""
    baseline = baseline.detach() if isinstance(baseline, torch.Tensor) else torch.full_like(rewards, baseline)
    total, steps = 0.0, 0
    for i in range(rewards.shape[0]):
        length = int(mask[i].sum())
        running = 0.0
        for t in reversed(range(length)):
            running = float(rewards[i, t]) + gamma * running
            total = total + (running - float(baseline[i, t])) * logprobs[i, t].float()
            steps += 1
    return -total / steps


def test_reference_from_the_library_gets_full_points(capsys):
    result = check("reinforce_gradient", loss_and_gradients(library_loss))
    assert result.ok and result.points == result.max_points == N_CASES
    assert f"{N_CASES}/{N_CASES} cases passed" in capsys.readouterr().out


def test_a_loop_implementation_passes():
    assert check("reinforce_gradient", loss_and_gradients(loop_loss), verbose=False).ok


@pytest.mark.parametrize("wrong", EXERCISE.wrong_answers, ids=lambda wrong: wrong.name)
def test_each_wrong_answer_fails_with_its_own_hint(wrong: WrongAnswer, capsys):
    with pytest.raises(AssertionError, match=rf"reinforce_gradient: \d/{N_CASES} cases passed"):
        check("reinforce_gradient", wrong.fn)
    out = capsys.readouterr().out
    assert f"looks like: {wrong.name}: {wrong.hint}" in out
    for other in EXERCISE.wrong_answers:
        if other is not wrong:
            assert other.hint not in out, f"{wrong.name!r} also got the hint of {other.name!r}"
    result = check("reinforce_gradient", wrong.fn, raise_on_failure=False, verbose=False)
    assert result.passed < result.total and result.diagnosis == [wrong.name]


def test_the_required_mistakes_are_covered():
    names = " | ".join(wrong.name for wrong in EXERCISE.wrong_answers)
    for mistake in ("off by one", "total return", "sign flipped", "baseline not detached", "padded steps not masked"):
        assert mistake in names


def test_a_baseline_that_is_not_detached_is_caught_by_its_gradient_alone():
    wrong = next(w for w in EXERCISE.wrong_answers if w.name == "baseline not detached")
    learned = next(case for case in EXERCISE.cases if "requires grad" in case.description)
    loss, grad, grad_baseline = wrong.fn(*learned.args)
    ref_loss, ref_grad, ref_grad_baseline = EXERCISE.reference(*learned.args)
    assert torch.allclose(loss, ref_loss) and torch.allclose(grad, ref_grad)  # same value, same policy gradient
    assert torch.count_nonzero(ref_grad_baseline) == 0 and torch.count_nonzero(grad_baseline) > 0


def test_the_gradient_is_the_masked_policy_gradient_estimate():
    case = EXERCISE.cases[1]  # padded batch, scalar baseline
    logprobs, rewards, mask, gamma, baseline = case.args
    _, grad, grad_baseline = EXERCISE.reference(*case.args)
    returns = discounted_returns(rewards, gamma)  # padded rewards are 0, so no leak across the padding
    assert torch.allclose(grad, -(returns - baseline) * mask / mask.sum())
    assert grad_baseline == 0.0 and torch.count_nonzero(grad * (1 - mask)) == 0


@pytest.mark.parametrize(
    "broken, message",
    [
        (lambda lp, r, m, g, b: library_loss(lp, r, m, g, b).item(), "torch tensor"),
        (lambda lp, r, m, g, b: -(lp * m), "scalar"),
        (lambda lp, r, m, g, b: library_loss(lp, r, m, g, b).detach(), "autograd"),
    ],
    ids=["a float", "not a scalar", "detached"],
)
def test_a_loss_that_cannot_be_differentiated_fails_with_a_clear_message(broken, message):
    result = check("reinforce_gradient", loss_and_gradients(broken), raise_on_failure=False, verbose=False)
    assert result.passed == 0 and all(case.raised and message in case.message for case in result.cases)


def test_not_implemented_says_not_implemented_yet(capsys):
    def unfinished(logprobs, rewards, mask, gamma, baseline):
        raise NotImplementedError("reinforce_surrogate: replace this line with your code")

    with pytest.raises(AssertionError, match=f"0/{N_CASES}"):
        check("reinforce_gradient", loss_and_gradients(unfinished))
    assert "not implemented yet" in capsys.readouterr().out
