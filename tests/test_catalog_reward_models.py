"""Exercise ex05 (the Bradley–Terry loss and the DPO loss): the references earn full points, other correct
implementations pass, and every typical mistake fails with its own hint; the DPO check sees a gradient
that reaches the reference model even when the loss value is right."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqrl.grading import WrongAnswer, check, get_exercise
from seqrl.grading.catalog.reward_models import loss_and_gradients
from seqrl.rlhf.objectives import bradley_terry_loss, dpo_loss

BT = get_exercise("bradley_terry_loss")
DPO = get_exercise("dpo_loss")


def _assert_own_hint(exercise, fn, wrong: WrongAnswer, capsys) -> None:
    n_cases = len(exercise.cases)
    with pytest.raises(AssertionError, match=rf"{exercise.name}: \d/{n_cases} cases passed"):
        check(exercise.name, fn)
    out = capsys.readouterr().out
    assert f"looks like: {wrong.name}: {wrong.hint}" in out
    for other in exercise.wrong_answers:
        if other is not wrong:
            assert other.hint not in out, f"{wrong.name!r} also got the hint of {other.name!r}"
    result = check(exercise.name, fn, raise_on_failure=False, verbose=False)
    assert result.passed < result.total and result.diagnosis == [wrong.name]


# ---------------------------------------------------------------------------------------------
# Bradley–Terry


def test_bradley_terry_reference_gets_full_points(capsys):
    result = check("bradley_terry_loss", bradley_terry_loss)
    assert result.ok and result.points == result.max_points == len(BT.cases)
    assert f"{len(BT.cases)}/{len(BT.cases)} cases passed" in capsys.readouterr().out


def test_a_softplus_implementation_passes():
    assert check("bradley_terry_loss", lambda w, l: F.softplus(l - w).mean(), verbose=False).ok


def test_bradley_terry_reference_matches_the_hand_computed_likelihood():
    one_pair = BT.cases[0]  # margin 1: -log sigma(1) = log(1 + e^-1)
    assert math.isclose(float(BT.reference(*one_pair.args)), math.log(1 + math.exp(-1)), rel_tol=1e-6)
    confident = next(case for case in BT.cases if "-120" in case.description)
    loss = BT.reference(*confident.args)
    assert confident.args[0].dtype == torch.float32 and torch.isfinite(loss) and loss > 120 / 3 - 1


@pytest.mark.parametrize("wrong", BT.wrong_answers, ids=lambda wrong: wrong.name)
def test_each_bradley_terry_mistake_fails_with_its_own_hint(wrong: WrongAnswer, capsys):
    _assert_own_hint(BT, wrong.fn, wrong, capsys)


def test_log_of_sigmoid_is_only_caught_by_the_confidently_wrong_pair():
    wrong = next(w for w in BT.wrong_answers if w.name.startswith("log(sigmoid"))
    result = check("bradley_terry_loss", wrong.fn, raise_on_failure=False, verbose=False)
    failed = [case.description for case in result.cases if not case.passed]
    assert len(failed) == 1 and "-120" in failed[0]


def test_the_required_bradley_terry_mistakes_are_covered():
    names = " | ".join(wrong.name for wrong in BT.wrong_answers)
    for mistake in ("preference flipped", "log(sigmoid", "summed", "probability instead of log-likelihood"):
        assert mistake in names


# ---------------------------------------------------------------------------------------------
# DPO


def _library_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)[0]


def _no_grad_reference_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """A student's version: log-ratios first, the reference under no_grad, beta on the difference."""
    with torch.no_grad():
        ref_margin = ref_chosen - ref_rejected
    return F.softplus(-beta * ((policy_chosen - policy_rejected) - ref_margin)).mean()


def test_dpo_reference_from_the_library_gets_full_points(capsys):
    result = check("dpo_loss", loss_and_gradients(_library_dpo))
    assert result.ok and result.points == result.max_points == len(DPO.cases)
    assert f"{len(DPO.cases)}/{len(DPO.cases)} cases passed" in capsys.readouterr().out


def test_a_no_grad_implementation_passes():
    assert check("dpo_loss", loss_and_gradients(_no_grad_reference_dpo), verbose=False).ok


def test_at_the_reference_the_dpo_loss_is_log_2_and_the_reference_gets_no_gradient():
    first = DPO.cases[0]  # policy = reference
    out = DPO.reference(*first.args)
    beta = first.args[-1]
    assert math.isclose(float(out["loss"]), math.log(2), rel_tol=1e-9)
    batch = len(first.args[0])
    assert torch.allclose(out["d loss / d policy_chosen"], torch.full((batch,), -beta / (2 * batch), dtype=torch.float64))
    assert torch.allclose(out["d loss / d policy_rejected"], torch.full((batch,), beta / (2 * batch), dtype=torch.float64))
    assert all(torch.count_nonzero(DPO.reference(*case.args)[f"d loss / d {name}"]) == 0
               for case in DPO.cases for name in ("ref_chosen", "ref_rejected"))


@pytest.mark.parametrize("wrong", DPO.wrong_answers, ids=lambda wrong: wrong.name)
def test_each_dpo_mistake_fails_with_its_own_hint(wrong: WrongAnswer, capsys):
    _assert_own_hint(DPO, wrong.fn, wrong, capsys)


def test_a_missing_stop_gradient_is_caught_by_the_gradient_alone():
    wrong = next(w for w in DPO.wrong_answers if "stop-gradient" in w.name)
    for case in DPO.cases:
        got, expected = wrong.fn(*case.args), DPO.reference(*case.args)
        assert torch.allclose(got["loss"], expected["loss"])
        assert torch.allclose(got["d loss / d policy_chosen"], expected["d loss / d policy_chosen"])
        assert torch.count_nonzero(got["d loss / d ref_chosen"]) > 0


def test_the_required_dpo_mistakes_are_covered():
    names = " | ".join(wrong.name for wrong in DPO.wrong_answers)
    for mistake in ("stop-gradient", "beta omitted", "beta multiplies the loss", "chosen and rejected swapped",
                    "reference not subtracted"):
        assert mistake in names


@pytest.mark.parametrize(
    "broken, message",
    [
        (lambda pc, pr, rc, rr, b: _library_dpo(pc, pr, rc, rr, b).item(), "torch tensor"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))), "scalar"),
        (lambda pc, pr, rc, rr, b: _library_dpo(pc, pr, rc, rr, b).detach(), "autograd"),
    ],
    ids=["a float", "not a scalar", "detached"],
)
def test_a_dpo_loss_that_cannot_be_differentiated_fails_with_a_clear_message(broken, message):
    result = check("dpo_loss", loss_and_gradients(broken), raise_on_failure=False, verbose=False)
    assert result.passed == 0 and all(case.raised and message in case.message for case in result.cases)


@pytest.mark.parametrize("name", ["bradley_terry_loss", "dpo_loss"])
def test_not_implemented_says_not_implemented_yet(name, capsys):
    def unfinished(*args):
        raise NotImplementedError(f"{name}: replace this line with your code")

    fn = loss_and_gradients(unfinished) if name == "dpo_loss" else unfinished
    with pytest.raises(AssertionError, match="0/"):
        check(name, fn)
    assert "not implemented yet" in capsys.readouterr().out
