r"""Exercise ex03: the REINFORCE surrogate loss for a padded batch of episodes.

The student writes ``reinforce_surrogate(logprobs, rewards, mask, gamma, baseline)``, the scalar

.. math:: \mathcal L = -\frac{1}{M} \sum_{i, t} m_{i,t}\, (G_{i,t} - b_{i,t})\, \log\pi(a_{i,t} \mid h_{i,t}),
          \qquad G_{i,t} = \sum_{k \ge t} \gamma^{k-t} r_{i,k}, \qquad M = \sum_{i,t} m_{i,t},

whose gradient is the policy-gradient estimate. A loss is only right if its *gradient* is right, so
the check differentiates it: :func:`loss_and_gradients` turns the student's function into one that
returns ``(loss, dL/dlogprobs, dL/dbaseline)``, the baseline being a tensor that requires grad when
it is one (a learned value head, say). The reference and every wrong answer go through the same
wrapper, so :func:`~seqrl.grading.check` compares all three, item by item.

Padded steps (``mask == 0``, at the end of each row) have reward 0 and arbitrary log-probabilities,
as a model's outputs on padding are.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..checks import Case, Exercise, WrongAnswer

__all__ = ["EXERCISES", "loss_and_gradients"]

LossFn = Callable[..., torch.Tensor]


def loss_and_gradients(fn: LossFn) -> Callable[..., tuple]:
    """Wrap a REINFORCE loss ``fn(logprobs, rewards, mask, gamma, baseline)`` so it returns
    ``(loss, grad_logprobs, grad_baseline)``, all detached.

    ``logprobs`` becomes a leaf that requires grad (as a policy's log-probabilities do); a tensor
    ``baseline`` too (as a learned value would), and its gradient should be zero: the baseline is a
    constant of the policy gradient. A number ``baseline`` gets ``0.0`` in the third place.
    """

    def wrapped(logprobs, rewards, mask, gamma, baseline):
        logprobs = logprobs.detach().clone().requires_grad_(True)
        if isinstance(baseline, torch.Tensor):
            baseline = baseline.detach().clone().requires_grad_(True)
        loss = fn(logprobs, rewards, mask, gamma, baseline)
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"the loss must be a torch tensor computed from logprobs, got {type(loss).__name__}")
        if loss.dim() != 0:
            raise ValueError(f"the loss must be a scalar (a 0-d tensor, e.g. from .mean() or .sum()), got shape {tuple(loss.shape)}")
        if not loss.requires_grad:
            raise ValueError("the loss does not depend on logprobs through autograd: build it from logprobs "
                             "with torch operations (no .item(), .detach() or numpy on the way)")
        inputs = [logprobs] + ([baseline] if isinstance(baseline, torch.Tensor) else [])
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        grad_logprobs = grads[0] if grads[0] is not None else torch.zeros_like(logprobs)
        if isinstance(baseline, torch.Tensor):
            grad_baseline = grads[1] if grads[1] is not None else torch.zeros_like(baseline)
            grad_baseline = grad_baseline.detach()
        else:
            grad_baseline = 0.0
        return loss.detach(), grad_logprobs.detach(), grad_baseline

    wrapped.__name__ = getattr(fn, "__name__", "loss")
    wrapped.__wrapped__ = fn
    return wrapped


# ---------------------------------------------------------------------------------------------
# The reference, from the library's pieces, and the typical mistakes


def _dones(mask: torch.Tensor) -> torch.Tensor:
    """True at the last real step of each row (rows are right-padded)."""
    lengths = mask.sum(dim=-1).long()  # (N,)
    dones = torch.zeros_like(mask, dtype=torch.bool)
    rows = torch.nonzero(lengths > 0).reshape(-1)
    dones[rows, lengths[rows] - 1] = True
    return dones


def _returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    from seqrl.rl import discounted_returns

    return discounted_returns(rewards * mask, gamma, _dones(mask)) * mask


def _reference(logprobs, rewards, mask, gamma, baseline):
    from seqrl.rl import reinforce_loss

    return reinforce_loss(logprobs, _returns(rewards, mask, gamma) - baseline, mask)


def _masked_loss(logprobs, weights, mask):
    """-mean over real steps of weights * logprobs, weights NOT detached (the mistakes choose what flows)."""
    mask = mask.to(logprobs.dtype)
    return -(logprobs * weights * mask).sum() / mask.sum()


def _excludes_current_reward(logprobs, rewards, mask, gamma, baseline):
    """G_t = sum_{k > t}: the reward of step t left out."""
    returns = _returns(rewards, mask, gamma) - rewards * mask
    return _masked_loss(logprobs, (returns - baseline).detach(), mask)


def _total_return(logprobs, rewards, mask, gamma, baseline):
    """Every step weighted by the episode's return G_0."""
    returns = _returns(rewards, mask, gamma)[:, :1].expand_as(rewards)
    return _masked_loss(logprobs, (returns - baseline).detach(), mask)


def _sign_flipped(logprobs, rewards, mask, gamma, baseline):
    """+mean(advantage * log pi): the objective to maximise, handed to a minimiser."""
    return -_reference(logprobs, rewards, mask, gamma, baseline)


def _baseline_not_detached(logprobs, rewards, mask, gamma, baseline):
    """(G_t - b_t) not detached: the policy loss also pushes the baseline around."""
    return _masked_loss(logprobs, _returns(rewards, mask, gamma) - baseline, mask)


def _padding_not_masked(logprobs, rewards, mask, gamma, baseline):
    """The mean over all N * T entries, padding included."""
    returns = _returns(rewards, mask, gamma)
    return -(logprobs * (returns - baseline).detach()).mean()


def _mean_over_episodes(logprobs, rewards, mask, gamma, baseline):
    """Sum over steps, mean over episodes: divided by N instead of the number of real steps."""
    mask = mask.to(logprobs.dtype)
    advantages = (_returns(rewards, mask, gamma) - baseline).detach()
    return -(logprobs * advantages * mask).sum() / mask.shape[0]


def _no_baseline(logprobs, rewards, mask, gamma, baseline):
    """The baseline never subtracted."""
    return _reference(logprobs, rewards, mask, gamma, 0.0)


def _undiscounted(logprobs, rewards, mask, gamma, baseline):
    """gamma ignored: G_t = sum_{k >= t} r_k."""
    return _reference(logprobs, rewards, mask, 1.0, baseline)


# ---------------------------------------------------------------------------------------------
# Cases: padded batches with arbitrary log-probabilities on the padding


def _batch(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logprobs, rewards, mask)`` for right-padded episodes of the given lengths (float64)."""
    generator = torch.Generator().manual_seed(seed)
    n, horizon = len(lengths), max(lengths)
    mask = (torch.arange(horizon)[None, :] < torch.tensor(lengths)[:, None]).double()  # (N, T)
    logprobs = -torch.rand(n, horizon, generator=generator, dtype=torch.float64) * 2.0 - 0.05  # padding too
    rewards = torch.randn(n, horizon, generator=generator, dtype=torch.float64) * mask
    return logprobs, rewards, mask


def _cases() -> list[Case]:
    one = _batch([4], seed=1)
    padded = _batch([5, 3, 1], seed=2)
    learned = _batch([4, 2], seed=3)
    corridor_logprobs, _, corridor_mask = _batch([6, 3, 5, 2], seed=4)
    corridor = (corridor_logprobs, -corridor_mask, corridor_mask)  # -1 per real step, as in the short corridor
    value_head = torch.tensor([[0.5, -0.2, 1.0, 0.3], [-0.4, 0.8, 0.0, 0.0]], dtype=torch.float64)
    per_step = torch.linspace(-3.0, -1.0, 6, dtype=torch.float64).expand(4, 6).clone()
    return [
        Case((*one, 1.0, 0.0), description="one episode of 4 steps, gamma = 1, no baseline"),
        Case((*padded, 0.9, 0.5), description="3 padded episodes (lengths 5, 3, 1), gamma = 0.9, baseline 0.5"),
        Case((*learned, 0.99, value_head),
             description="2 padded episodes, gamma = 0.99, a learned (N, T) baseline that requires grad"),
        Case((*corridor, 0.5, per_step),
             description="4 corridor episodes (-1 per step), gamma = 0.5, an (N, T) baseline"),
    ]


def reinforce_gradient_exercise() -> Exercise:
    wrapped = loss_and_gradients
    wrong_answers = [
        WrongAnswer(
            "reward-to-go off by one (r_t left out)",
            wrapped(_excludes_current_reward),
            "the reward-to-go includes the reward of step t itself: G_t = r_t + gamma * G_{t+1}; "
            "your sum starts one step late.",
        ),
        WrongAnswer(
            "the episode's total return at every step",
            wrapped(_total_return),
            "an action cannot change the rewards that came before it: weight log pi(a_t | h_t) by the "
            "reward-to-go G_t (rewards from step t on), not by the return of the whole episode.",
        ),
        WrongAnswer(
            "sign flipped",
            wrapped(_sign_flipped),
            "the optimiser minimises the loss and we want to maximise the return: the loss is MINUS the "
            "mean of (G_t - b_t) * log pi(a_t | h_t).",
        ),
        WrongAnswer(
            "baseline not detached",
            wrapped(_baseline_not_detached),
            "the advantage G_t - b_t is a constant of the policy gradient: detach it, "
            "(returns - baseline).detach(); otherwise the policy loss sends gradients into the baseline "
            "(a value head) and trains it to inflate the advantages.",
        ),
        WrongAnswer(
            "padded steps not masked",
            wrapped(_padding_not_masked),
            "padded steps belong to no episode: multiply by the mask and divide by mask.sum(), the number "
            "of real steps, not by N * T.",
        ),
        WrongAnswer(
            "averaged over episodes instead of steps",
            wrapped(_mean_over_episodes),
            "the loss is the mean over real steps: divide the masked sum by mask.sum(), not by the number "
            "of episodes N.",
        ),
        WrongAnswer(
            "baseline not subtracted",
            wrapped(_no_baseline),
            "weight each log-probability by the advantage G_t - b_t: subtract the baseline from the returns.",
        ),
        WrongAnswer(
            "no discount (gamma treated as 1)",
            wrapped(_undiscounted),
            "discount the future: G_t = r_t + gamma * G_{t+1}, so a reward k steps ahead counts gamma^k.",
        ),
    ]
    return Exercise("reinforce_gradient", wrapped(_reference), _cases(), wrong_answers)


EXERCISES: dict[str, Callable[[], Exercise]] = {
    "reinforce_gradient": reinforce_gradient_exercise,
}
