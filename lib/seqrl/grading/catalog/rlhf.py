r"""Exercise ex06: the three pieces of PPO for language models, on right-padded batches of responses.

* ``kl_penalised_rewards``: the per-token reward :math:`r_t = -\beta(\log\pi_{\text{old}} - \log\pi_{\text{ref}})
  + \mathbb 1[t = T]\,\text{score}` (reference :func:`seqrl.rlhf.objectives.kl_penalised_rewards`),
  checked through :func:`rewards_and_gradient_flag` so that a missing stop-gradient shows;
* ``gae_advantages``: GAE on response tokens, zero on pads (reference :func:`seqrl.rl.gae`);
* ``ppo_clipped_loss``: the clipped policy loss (reference :func:`seqrl.rl.ppo_policy_loss`), checked
  with its gradient through :func:`loss_and_gradient`.

Cases put arbitrary numbers on the padding (log-probabilities and values are computed at every
position by the model), so a mistake that lets padding in shows.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..checks import Case, Exercise, WrongAnswer

__all__ = ["EXERCISES", "rewards_and_gradient_flag", "loss_and_gradient"]


def _mask(lengths: list[int], width: int) -> torch.Tensor:
    """``(B, width)`` float64 response mask, rows right-padded."""
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).double()


# ---------------------------------------------------------------------------------------------
# ex06a: KL-penalised per-token rewards


def rewards_and_gradient_flag(fn: Callable[..., tuple]) -> Callable[..., dict]:
    """Wrap ``fn(logprobs, ref_logprobs, scores, mask, kl_coef) -> (rewards, kl)`` so that it returns
    ``{"rewards": ..., "kl": ..., "rewards require grad": bool}``.

    ``logprobs``, ``ref_logprobs`` and ``scores`` become leaves that require grad, as they would if the
    policy, the reference or the reward model had been run without ``torch.no_grad()``. The rewards
    are constants of PPO's loss, so they must not require grad.
    """

    def wrapped(logprobs, ref_logprobs, scores, mask, kl_coef):
        logprobs, ref_logprobs, scores = (x.detach().clone().requires_grad_(True) for x in (logprobs, ref_logprobs, scores))
        out = fn(logprobs, ref_logprobs, scores, mask, kl_coef)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"return a pair (rewards, kl) of (B, N) tensors, got {type(out).__name__}")
        rewards, kl = out
        if not isinstance(rewards, torch.Tensor) or not isinstance(kl, torch.Tensor):
            raise TypeError(f"rewards and kl must be torch tensors, got {type(rewards).__name__} and {type(kl).__name__}")
        return {"rewards": rewards.detach(), "kl": kl.detach(), "rewards require grad": bool(rewards.requires_grad)}

    wrapped.__name__ = getattr(fn, "__name__", "kl_penalised_rewards")
    wrapped.__wrapped__ = fn
    return wrapped


def _kl_reference(logprobs, ref_logprobs, scores, mask, kl_coef):
    from seqrl.rlhf.objectives import kl_penalised_rewards

    return kl_penalised_rewards(logprobs, ref_logprobs, scores, mask, kl_coef)


def _kl_and_last(logprobs, ref_logprobs, mask):
    """(per-token k1 KL masked and detached, index of the last real token) for the mistakes below."""
    kl = (logprobs.detach() - ref_logprobs.detach()) * mask
    return kl, mask.sum(dim=1).long() - 1


def _score_after_eos(logprobs, ref_logprobs, scores, mask, kl_coef):
    """The score on the slot after the last real token, the first pad (an IndexError on a full row)."""
    kl, last = _kl_and_last(logprobs, ref_logprobs, mask)
    rewards = -kl_coef * kl
    rewards[torch.arange(len(scores)), last + 1] += scores.detach()
    return rewards, kl


def _score_on_last_column(logprobs, ref_logprobs, scores, mask, kl_coef):
    """The score always on column N - 1, a pad for every response shorter than the batch."""
    kl, _ = _kl_and_last(logprobs, ref_logprobs, mask)
    rewards = -kl_coef * kl
    rewards[:, -1] += scores.detach()
    return rewards, kl


def _kl_sign_flipped(logprobs, ref_logprobs, scores, mask, kl_coef):
    """+beta (log pi - log pi_ref): moving away from the reference is rewarded."""
    kl, last = _kl_and_last(logprobs, ref_logprobs, mask)
    rewards = kl_coef * kl
    rewards[torch.arange(len(scores)), last] += scores.detach()
    return rewards, kl


def _pads_not_masked(logprobs, ref_logprobs, scores, mask, kl_coef):
    """The KL of the padding's (meaningless) log-probabilities counted as well."""
    kl = logprobs.detach() - ref_logprobs.detach()
    rewards = -kl_coef * kl
    rewards[torch.arange(len(scores)), mask.sum(dim=1).long() - 1] += scores.detach()
    return rewards, kl


def _score_on_every_token(logprobs, ref_logprobs, scores, mask, kl_coef):
    """The sequence's score added to every real token instead of once at its end."""
    kl, _ = _kl_and_last(logprobs, ref_logprobs, mask)
    return -kl_coef * kl + scores.detach()[:, None] * mask, kl


def _no_stop_gradient(logprobs, ref_logprobs, scores, mask, kl_coef):
    """The right numbers, computed from inputs that were never detached."""
    kl = (logprobs - ref_logprobs) * mask
    last = (mask.sum(dim=1).long() - 1)[:, None]
    rewards = -kl_coef * kl + torch.zeros_like(kl).scatter(1, last, scores[:, None]) * 1.0
    return rewards, kl.detach()


def _kl_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(6)

    def case(lengths: list[int], width: int, kl_coef: float, what: str) -> Case:
        mask = _mask(lengths, width)
        logprobs = -3.0 * torch.rand(len(lengths), width, generator=generator, dtype=torch.float64)  # pads too
        ref_logprobs = -3.0 * torch.rand(len(lengths), width, generator=generator, dtype=torch.float64)
        scores = 2.0 * torch.randn(len(lengths), generator=generator, dtype=torch.float64)
        shown = ", ".join(map(str, lengths))
        return Case((logprobs, ref_logprobs, scores, mask, kl_coef), {},
                    f"{what}: {len(lengths)} responses of lengths {shown} in {width} columns, kl_coef {kl_coef:g}")

    return [
        case([3, 5, 1], 6, 0.1, "padded responses"),
        case([2, 4], 6, 0.5, "two short responses"),
        case([5, 2], 5, 0.05, "one response fills the width"),
        case([1, 3, 2], 4, 0.0, "no KL penalty (kl_coef 0)"),
    ]


def kl_penalised_rewards_exercise() -> Exercise:
    """ex06: ``kl_penalised_rewards(logprobs, ref_logprobs, scores, mask, kl_coef) -> (rewards, kl)``."""
    wrapped = rewards_and_gradient_flag
    wrong_answers = [
        WrongAnswer(
            "score on the slot after EOS (the first pad)",
            wrapped(_score_after_eos),
            "the score belongs to the LAST REAL token, the <eos> at index mask.sum(1) - 1, not to the pad "
            "after it at index mask.sum(1) (a known bug of a popular library): a pad is not an action, "
            "and its advantage is zeroed, so the score would be lost.",
        ),
        WrongAnswer(
            "score always on the last column",
            wrapped(_score_on_last_column),
            "responses end at different places: put each response's score on its own last real token, "
            "index mask.sum(1) - 1 of its row, not on column N - 1, which is padding for every shorter "
            "response.",
        ),
        WrongAnswer(
            "KL penalty with the wrong sign",
            wrapped(_kl_sign_flipped),
            "the KL is a PENALTY: r_t = -kl_coef * (logprobs - ref_logprobs) (+ the score at the end); "
            "with a plus sign the policy is paid for moving away from the reference.",
        ),
        WrongAnswer(
            "padding not masked (KL on pads)",
            wrapped(_pads_not_masked),
            "the log-probabilities on pads are meaningless numbers: multiply the per-token KL by the mask, "
            "so that kl and rewards are exactly 0 after the <eos>.",
        ),
        WrongAnswer(
            "score added to every token",
            wrapped(_score_on_every_token),
            "the score is a reward for the whole response and is given once, at its last real token; "
            "added at every token it counts len(response) times and pays for length.",
        ),
        WrongAnswer(
            "no stop-gradient (rewards require grad)",
            wrapped(_no_stop_gradient),
            "rewards are constants for PPO's loss: detach logprobs, ref_logprobs and scores (or compute "
            "under torch.no_grad()), otherwise the policy loss also differentiates the reward itself.",
        ),
    ]
    return Exercise("kl_penalised_rewards", wrapped(_kl_reference), _kl_cases(), wrong_answers)


# ---------------------------------------------------------------------------------------------
# ex06b: GAE on response tokens


def _gae_reference(rewards, values, mask, gamma, lam):
    from seqrl.rl import gae

    return gae(rewards, values, gamma, lam, mask=mask)[0]


def _gae_loop(rewards, values, gamma, lam, next_values):
    """A_t = delta_t + gamma lam A_{t+1} with delta_t = r_t + gamma next_values_t - V_t (no masking)."""
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages


def _shift_left(x: torch.Tensor) -> torch.Tensor:
    """x_{t+1}, with 0 after the last column."""
    return torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)


def _value_of_same_step(rewards, values, mask, gamma, lam):
    """delta_t = r_t + gamma V_t - V_t: V_t where V_{t+1} belongs."""
    values = values * mask
    return _gae_loop(rewards * mask, values, gamma, lam, values) * mask


def _advantages_shifted(rewards, values, mask, gamma, lam):
    """A_{t+1} stored at t: the running sum stored before delta_t is added."""
    right = _gae_reference(rewards, values, mask, gamma, lam)
    return _shift_left(right) * mask


def _mask_ignored(rewards, values, mask, gamma, lam):
    """No mask at all: the last real token bootstraps from the pad's value, pads get advantages."""
    return _gae_loop(rewards, values, gamma, lam, _shift_left(values))


def _bootstraps_through_padding(rewards, values, mask, gamma, lam):
    """Advantages zeroed on pads, but the last real token still bootstraps from the pad after it."""
    return _gae_loop(rewards, values, gamma, lam, _shift_left(values)) * mask


def _pads_not_zeroed(rewards, values, mask, gamma, lam):
    """Right on real tokens, but the pads keep nonzero advantages (delta = -V on a pad)."""
    return _gae_loop(rewards * mask, values, gamma, lam, _shift_left(values * mask))


def _gamma_lambda_swapped(rewards, values, mask, gamma, lam):
    """lam where gamma belongs in delta_t, and the other way round."""
    return _gae_reference(rewards, values, mask, lam, gamma)


def _returns_not_advantages(rewards, values, mask, gamma, lam):
    """A_t + V_t, the value targets, returned instead of the advantages."""
    return (_gae_reference(rewards, values, mask, gamma, lam) + values) * mask


def _lambda_ignored(rewards, values, mask, gamma, lam):
    """lam treated as 1: the Monte-Carlo advantage G_t - V_t."""
    return _gae_reference(rewards, values, mask, gamma, 1.0)


def _gae_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(7)

    def case(lengths: list[int], width: int, gamma: float, lam: float, what: str, zero_values: bool = False) -> Case:
        mask = _mask(lengths, width)
        rewards = 0.1 * torch.randn(len(lengths), width, generator=generator, dtype=torch.float64) * mask
        rows = torch.arange(len(lengths))
        rewards[rows, mask.sum(dim=1).long() - 1] += torch.randn(len(lengths), generator=generator, dtype=torch.float64)
        values = torch.randn(len(lengths), width, generator=generator, dtype=torch.float64)  # pads too
        if zero_values:
            values = torch.zeros_like(values)
        shown = ", ".join(map(str, lengths))
        return Case((rewards, values, mask, gamma, lam), {},
                    f"{what}: lengths {shown} in {width} columns, gamma {gamma:g}, lam {lam:g}")

    return [
        case([4], 4, 1.0, 0.95, "one response, no padding"),
        case([6, 4, 2], 6, 1.0, 0.95, "the RLHF setting with padding"),
        case([5, 3], 5, 0.9, 0.5, "discounted"),
        case([3, 1, 4], 5, 1.0, 0.95, "a zero-initialised value head (V = 0)", zero_values=True),
        case([4, 2], 5, 0.8, 0.0, "lam = 0 (one-step TD errors)"),
    ]


def gae_exercise() -> Exercise:
    """ex06: ``gae_advantages(rewards, values, mask, gamma, lam) -> advantages (B, N)``."""
    wrong_answers = [
        WrongAnswer(
            "delta_t uses V_t instead of V_{t+1}",
            _value_of_same_step,
            "the TD error bootstraps from the NEXT state: delta_t = r_t + gamma * V_{t+1} - V_t; shift the "
            "values one column left (with V = 0 after the last real token).",
        ),
        WrongAnswer(
            "advantages shifted by one step (A_{t+1} stored at t)",
            _advantages_shifted,
            "add delta_t to the running sum before storing it: A_t = delta_t + gamma * lam * A_{t+1}, then "
            "advantages[:, t] = A_t.",
        ),
        WrongAnswer(
            "mask ignored (bootstraps through pads, advantages on pads)",
            _mask_ignored,
            "the response ends at its <eos>: V_{t+1} = 0 after the last real token (not the value the head "
            "wrote on the pad), and the advantages on pads must be exactly 0. Use the mask for both.",
        ),
        WrongAnswer(
            "last real token bootstraps from the pad's value",
            _bootstraps_through_padding,
            "the episode ends at the last real token: its next value is 0, not the value on the pad after "
            "it. Multiply the next values by the next step's mask (values * mask, shifted).",
        ),
        WrongAnswer(
            "advantages on pads not zeroed",
            _pads_not_zeroed,
            "pads are not actions: multiply the advantages by the mask so they are exactly 0 after the "
            "<eos> (otherwise whitening and the policy loss see them).",
        ),
        WrongAnswer(
            "gamma and lam swapped",
            _gamma_lambda_swapped,
            "gamma discounts the next value inside delta_t = r_t + gamma V_{t+1} - V_t; lam only enters the "
            "recursion A_t = delta_t + gamma * lam * A_{t+1}.",
        ),
        WrongAnswer(
            "returns instead of advantages",
            _returns_not_advantages,
            "you returned A_t + V_t, the value targets; the advantages are A_t alone (subtract the values, "
            "or do not add them).",
        ),
        WrongAnswer(
            "lam ignored (Monte-Carlo advantages)",
            _lambda_ignored,
            "the recursion is A_t = delta_t + gamma * LAM * A_{t+1}; without lam it is the Monte-Carlo "
            "advantage G_t - V_t.",
        ),
    ]
    return Exercise("gae_advantages", _gae_reference, _gae_cases(), wrong_answers)


# ---------------------------------------------------------------------------------------------
# ex06c: the clipped PPO policy loss


def loss_and_gradient(fn: Callable[..., torch.Tensor]) -> Callable[..., dict]:
    """Wrap ``fn(logprobs, logprobs_old, advantages, clip, mask) -> loss`` so that it returns
    ``{"loss": ..., "d loss / d logprobs": ...}``, both detached; ``logprobs`` is a leaf that requires
    grad, as the policy's log-probabilities in training are."""

    def wrapped(logprobs, logprobs_old, advantages, clip, mask):
        logprobs = logprobs.detach().clone().requires_grad_(True)
        loss = fn(logprobs, logprobs_old, advantages, clip, mask)
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"the loss must be a torch tensor computed from logprobs, got {type(loss).__name__}")
        if loss.dim() != 0:
            raise ValueError(f"the loss must be a scalar (a 0-d tensor), got shape {tuple(loss.shape)}")
        if not loss.requires_grad:
            raise ValueError("the loss does not depend on logprobs through autograd: build it from logprobs "
                             "with torch operations (no .item(), .detach() or numpy on the way)")
        (grad,) = torch.autograd.grad(loss, [logprobs], allow_unused=True)
        return {"loss": loss.detach(), "d loss / d logprobs": (grad if grad is not None else torch.zeros_like(logprobs)).detach()}

    wrapped.__name__ = getattr(fn, "__name__", "ppo_clipped_loss")
    wrapped.__wrapped__ = fn
    return wrapped


def _ppo_reference(logprobs, logprobs_old, advantages, clip, mask):
    from seqrl.rl import ppo_policy_loss

    return ppo_policy_loss(logprobs, logprobs_old, advantages, clip, mask)[0]


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum()


def _surrogates(logprobs, logprobs_old, advantages, clip):
    ratio = torch.exp(logprobs - logprobs_old)
    return -advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)


def _min_not_max(logprobs, logprobs_old, advantages, clip, mask):
    """min of the two losses: the optimistic bound, the clip then removes nothing it should."""
    return _masked(torch.minimum(*_surrogates(logprobs, logprobs_old, advantages, clip)), mask)


def _advantage_clipped(logprobs, logprobs_old, advantages, clip, mask):
    """clip(A, 1 - eps, 1 + eps) * ratio: the advantage clipped instead of the ratio."""
    ratio = torch.exp(logprobs - logprobs_old)
    return _masked(torch.maximum(-advantages * ratio, -advantages.clamp(1 - clip, 1 + clip) * ratio), mask)


def _ratio_inverted(logprobs, logprobs_old, advantages, clip, mask):
    """ratio = exp(log pi_old - log pi)."""
    ratio = torch.exp(logprobs_old - logprobs)
    return _masked(torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)), mask)


def _not_masked(logprobs, logprobs_old, advantages, clip, mask):
    """The mean over all B * N entries, pads included."""
    return torch.maximum(*_surrogates(logprobs, logprobs_old, advantages, clip)).mean()


def _ppo_sign_flipped(logprobs, logprobs_old, advantages, clip, mask):
    """The objective to maximise, handed to a minimiser."""
    return -_ppo_reference(logprobs, logprobs_old, advantages, clip, mask)


def _not_clipped(logprobs, logprobs_old, advantages, clip, mask):
    """-A * ratio with no clipping at all."""
    return _masked(_surrogates(logprobs, logprobs_old, advantages, clip)[0], mask)


def _ppo_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(8)

    def case(lengths: list[int], width: int, clip: float, spread: float, what: str) -> Case:
        mask = _mask(lengths, width)
        old = -0.2 - 2.5 * torch.rand(len(lengths), width, generator=generator, dtype=torch.float64)
        new = old + spread * torch.randn(len(lengths), width, generator=generator, dtype=torch.float64)
        advantages = 1.5 * torch.randn(len(lengths), width, generator=generator, dtype=torch.float64) * mask
        shown = ", ".join(map(str, lengths))
        return Case((new, old, advantages, clip, mask), {}, f"{what}: lengths {shown} in {width} columns, clip {clip:g}")

    first = case([4, 2], 4, 0.2, 0.0, "the first minibatch (ratio = 1)")
    return [
        first,
        case([5, 3, 5], 5, 0.2, 0.3, "ratios inside and outside [0.8, 1.2]"),
        case([6, 2], 6, 0.1, 0.4, "a tighter clip"),
        case([3, 4, 1, 2], 4, 0.3, 0.5, "larger policy moves"),
    ]


def ppo_exercise() -> Exercise:
    """ex06: ``ppo_clipped_loss(logprobs, logprobs_old, advantages, clip, mask) -> loss``, checked with
    its gradient (:func:`loss_and_gradient`)."""
    wrapped = loss_and_gradient
    wrong_answers = [
        WrongAnswer(
            "min instead of max (clipping the wrong side)",
            wrapped(_min_not_max),
            "the loss is the negative of PPO's objective E[min(rho A, clip(rho) A)], so take the MAX of "
            "-A*rho and -A*clip(rho): the pessimistic bound, which stops rewarding a ratio that already "
            "moved past 1 +- eps in the advantage's direction.",
        ),
        WrongAnswer(
            "advantage clipped instead of the ratio",
            wrapped(_advantage_clipped),
            "clip the probability RATIO rho = exp(logprobs - logprobs_old) to [1 - eps, 1 + eps], not the "
            "advantage.",
        ),
        WrongAnswer(
            "ratio inverted (exp(old - new))",
            wrapped(_ratio_inverted),
            "the importance ratio is pi_theta / pi_old = exp(logprobs - logprobs_old): the new policy on "
            "top.",
        ),
        WrongAnswer(
            "padding not masked in the mean",
            wrapped(_not_masked),
            "average over the real tokens only: (loss_per_token * mask).sum() / mask.sum(); pads are not "
            "actions, and their log-probabilities are meaningless.",
        ),
        WrongAnswer(
            "sign flipped (maximising the loss)",
            wrapped(_ppo_sign_flipped),
            "optimisers minimise: the loss is MINUS the clipped objective, max(-A*rho, -A*clip(rho)).",
        ),
        WrongAnswer(
            "no clipping",
            wrapped(_not_clipped),
            "without the clipped term this is the plain importance-weighted policy gradient, which lets "
            "the policy run far from pi_old within one batch: take max(-A*rho, -A*clip(rho, 1-eps, 1+eps)).",
        ),
    ]
    return Exercise("ppo_clipped_loss", wrapped(_ppo_reference), _ppo_cases(), wrong_answers)


EXERCISES: dict[str, Callable[[], Exercise]] = {
    "kl_penalised_rewards": kl_penalised_rewards_exercise,
    "gae_advantages": gae_exercise,
    "ppo_clipped_loss": ppo_exercise,
}
