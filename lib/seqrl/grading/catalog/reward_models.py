r"""Exercise ex05: the two preference losses, the Bradley–Terry loss of a reward model and the DPO loss
of a policy whose reward is implicit.

Both references call :mod:`seqrl.rlhf.objectives`. The DPO check differentiates the student's loss
(see :func:`loss_and_gradients`): a missing stop-gradient on the reference log-probabilities gives the
same loss value, only a gradient that should not be there.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..checks import Case, Exercise, WrongAnswer

__all__ = ["EXERCISES", "loss_and_gradients"]


# ---------------------------------------------------------------------------------------------
# ex05a: the Bradley–Terry loss, -mean log sigma(r_w - r_l)


def _bradley_terry_reference(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    from seqrl.rlhf.objectives import bradley_terry_loss

    return bradley_terry_loss(chosen, rejected)


def _preference_flipped(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigma(r_l - r_w): the rejected response treated as the preferred one."""
    return -F.logsigmoid(rejected - chosen).mean()


def _log_of_sigmoid(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(.)): the same number until sigmoid underflows to 0 and the log to -inf."""
    return -torch.log(torch.sigmoid(chosen - rejected)).mean()


def _summed(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Summed over the pairs instead of averaged."""
    return -F.logsigmoid(chosen - rejected).sum()


def _probability_not_likelihood(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """1 - sigma(r_w - r_l): the probability of the wrong label, not the negative log-likelihood."""
    return (1.0 - torch.sigmoid(chosen - rejected)).mean()


def _likelihood_not_negated(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """+mean log sigma(r_w - r_l): the log-likelihood itself, handed to a minimiser."""
    return F.logsigmoid(chosen - rejected).mean()


def bradley_terry_exercise() -> Exercise:
    """ex05: ``bradley_terry_loss(chosen, rejected)`` on ``(B,)`` reward vectors."""

    def case(chosen: list[float], rejected: list[float], what: str) -> Case:
        return Case((torch.tensor(chosen), torch.tensor(rejected)), {}, what)

    cases = [
        case([1.0], [0.0], "one pair, the chosen response 1 higher"),
        case([0.5, -1.0, 2.0, 0.0], [0.0, 0.5, -1.0, 0.0], "four pairs, some ranked wrongly by the model"),
        case([3.0, -2.0, 0.3], [-3.0, 2.0, 0.2], "three pairs with confident margins of both signs"),
        case([-60.0, 0.0, 1.0], [60.0, 0.0, -1.0],
             "three pairs, the reward model confidently wrong on one (margin -120, float32)"),
        case([2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0], "five pairs, every margin 1"),
    ]
    wrong_answers = [
        WrongAnswer(
            "preference flipped (sigma(r_l - r_w))",
            _preference_flipped,
            "the likelihood of the label 'chosen beats rejected' is sigma(r(chosen) - r(rejected)): the "
            "chosen reward comes first; yours rewards the model for preferring the rejected response.",
        ),
        WrongAnswer(
            "log(sigmoid(.)) instead of logsigmoid",
            _log_of_sigmoid,
            "torch.log(torch.sigmoid(x)) is log(0) = -inf once sigmoid underflows (x below about -100 in "
            "float32), so one confidently wrong pair makes the loss inf and the gradients nan: use "
            "torch.nn.functional.logsigmoid(x), which computes the same function stably.",
        ),
        WrongAnswer(
            "summed over pairs instead of averaged",
            _summed,
            "average over the B pairs (.mean()), so that the loss and the learning rate do not depend on "
            "the batch size.",
        ),
        WrongAnswer(
            "probability instead of log-likelihood (1 - sigma)",
            _probability_not_likelihood,
            "the loss is the negative LOG-likelihood, -log sigma(r_w - r_l), not the probability of a wrong "
            "label 1 - sigma(r_w - r_l): that one has vanishing gradients exactly where the model is most "
            "wrong.",
        ),
        WrongAnswer(
            "log-likelihood not negated",
            _likelihood_not_negated,
            "the optimiser minimises, and we want to maximise the log-likelihood: the loss is MINUS the "
            "mean of logsigmoid(r_w - r_l) (a positive number).",
        ),
    ]
    return Exercise("bradley_terry_loss", _bradley_terry_reference, cases, wrong_answers)


# ---------------------------------------------------------------------------------------------
# ex05b: the DPO loss, -mean log sigma(beta (log pi/pi_ref)(y_w) - beta (log pi/pi_ref)(y_l))


LossFn = Callable[..., torch.Tensor]


def loss_and_gradients(fn: LossFn) -> Callable[..., dict]:
    """Wrap a DPO loss ``fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`` so that it
    returns ``{"loss": ..., "d loss / d policy_chosen": ..., ...}``, all detached.

    All four log-probability vectors become leaves that require grad, as they would if the reference
    model had been run without ``torch.no_grad()``: the gradient of the loss with respect to the
    reference's log-probabilities must be zero (a frozen model learns nothing).
    """

    def wrapped(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
        inputs = [x.detach().clone().requires_grad_(True) for x in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)]
        loss = fn(*inputs, beta)
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"the loss must be a torch tensor computed from the log-probabilities, got {type(loss).__name__}")
        if loss.dim() != 0:
            raise ValueError(f"the loss must be a scalar (a 0-d tensor, e.g. from .mean()), got shape {tuple(loss.shape)}")
        if not loss.requires_grad:
            raise ValueError("the loss does not depend on the policy's log-probabilities through autograd: build it "
                             "with torch operations (no .item(), .detach() of the policy terms, or numpy)")
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        out = {"loss": loss.detach()}
        for name, x, grad in zip(("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected"), inputs, grads):
            out[f"d loss / d {name}"] = (grad if grad is not None else torch.zeros_like(x)).detach()
        return out

    wrapped.__name__ = getattr(fn, "__name__", "dpo_loss")
    wrapped.__wrapped__ = fn
    return wrapped


def _dpo_reference(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    from seqrl.rlhf.objectives import dpo_loss

    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)[0]


def _dpo(margin: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(margin).mean()


def _reference_not_detached(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """The right loss, but the reference's log-probabilities are not detached."""
    return _dpo(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))


def _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected) -> torch.Tensor:
    return (policy_chosen - ref_chosen.detach()) - (policy_rejected - ref_rejected.detach())


def _beta_omitted(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """beta never used: the implicit reward is log pi/pi_ref, not beta log pi/pi_ref."""
    return _dpo(_log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected))


def _beta_outside(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """beta multiplies the loss instead of the margin inside the sigmoid."""
    return beta * _dpo(_log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected))


def _beta_divides(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """The margin divided by beta (beta read as a temperature) instead of multiplied."""
    return _dpo(_log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected) / beta)


def _chosen_rejected_swapped(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """The rejected response's implicit reward minus the chosen one's."""
    return _dpo(-beta * _log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected))


def _reference_not_subtracted(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """beta (log pi(y_w) - log pi(y_l)): the reference model left out."""
    return _dpo(beta * (policy_chosen - policy_rejected))


def _dpo_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(5)

    def batch(n: int, beta: float, what: str, spread: float = 6.0) -> Case:
        ref = -20.0 - 10.0 * torch.rand(2, n, generator=generator, dtype=torch.float64)  # sums over ~10 tokens
        policy = ref + spread * (torch.rand(2, n, generator=generator, dtype=torch.float64) - 0.5)
        return Case((policy[0], policy[1], ref[0], ref[1], beta), {}, f"{what}, {n} pairs, beta = {beta:g}")

    ref_c, ref_r = torch.tensor([-12.0, -30.0], dtype=torch.float64), torch.tensor([-15.0, -9.0], dtype=torch.float64)
    return [
        Case((ref_c.clone(), ref_r.clone(), ref_c, ref_r, 0.1), {},
             "policy = reference (the first step of DPO), 2 pairs, beta = 0.1"),
        batch(4, 0.1, "a policy that moved away from the reference"),
        batch(3, 0.5, "larger moves", spread=10.0),
        batch(5, 2.0, "a strong KL penalty"),
    ]


def dpo_exercise() -> Exercise:
    """ex05: ``dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)``, checked with
    its gradients (:func:`loss_and_gradients`)."""
    wrapped = loss_and_gradients
    wrong_answers = [
        WrongAnswer(
            "no stop-gradient on the reference",
            wrapped(_reference_not_detached),
            "the reference model is frozen: its log-probabilities are constants, so no gradient may reach "
            "them. Detach them (ref_chosen.detach(), ref_rejected.detach()) or compute them under "
            "torch.no_grad(); the loss value is the same, but your gradient would also train the reference.",
        ),
        WrongAnswer(
            "beta omitted",
            wrapped(_beta_omitted),
            "the implicit reward is beta * (log pi(y|x) - log pi_ref(y|x)): multiply the margin by beta "
            "inside the sigmoid; beta sets how far the policy may move from the reference.",
        ),
        WrongAnswer(
            "beta multiplies the loss, not the margin",
            wrapped(_beta_outside),
            "beta belongs INSIDE the sigmoid: -logsigmoid(beta * margin), not beta * -logsigmoid(margin); "
            "scaling the loss only rescales the learning rate, it does not change the optimum.",
        ),
        WrongAnswer(
            "margin divided by beta",
            wrapped(_beta_divides),
            "beta multiplies the log-ratio margin (r_hat = beta * log pi/pi_ref), it does not divide it: "
            "a small beta is a weak KL penalty and lets the policy move far.",
        ),
        WrongAnswer(
            "chosen and rejected swapped",
            wrapped(_chosen_rejected_swapped),
            "the margin is r_hat(chosen) - r_hat(rejected): the chosen response's log-ratio comes first, so "
            "minimising the loss raises the chosen response's probability relative to the reference.",
        ),
        WrongAnswer(
            "reference not subtracted",
            wrapped(_reference_not_subtracted),
            "the implicit reward is the log-RATIO to the reference, beta * (log pi(y|x) - log pi_ref(y|x)): "
            "subtract ref_chosen from policy_chosen and ref_rejected from policy_rejected.",
        ),
    ]
    return Exercise("dpo_loss", wrapped(_dpo_reference), _dpo_cases(), wrong_answers)


EXERCISES: dict[str, Callable[[], Exercise]] = {
    "bradley_terry_loss": bradley_terry_exercise,
    "dpo_loss": dpo_exercise,
}
