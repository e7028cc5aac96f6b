r"""The small, pure objectives of RLHF, written once: Bradley–Terry, the KL-penalised per-token
reward, and DPO. Everything else in :mod:`seqrl.rlhf` (reward models, PPO, DPO training) and the
Part 2 exercises call these.

Shapes: ``B`` sequences, ``N`` response tokens. A response ``mask (B, N)`` is 1 on real tokens (up to
and including ``<eos>``) and 0 on the padding after it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..text.batching import last_token_index

__all__ = [
    "bradley_terry_loss",
    "preference_probability",
    "kl_penalised_rewards",
    "dpo_loss",
]


def _same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shapes must match, got {shapes}")


def preference_probability(reward_a: torch.Tensor, reward_b: torch.Tensor) -> torch.Tensor:
    r"""Bradley–Terry: :math:`P(a \succ b) = \sigma\big(r(a) - r(b)\big)`."""
    _same_shape(reward_a=reward_a, reward_b=reward_b)
    return torch.sigmoid(reward_a - reward_b)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    r"""Negative log-likelihood of the observed preferences under Bradley–Terry:

    .. math:: \mathcal L(\phi) = -\frac1B\sum_i \log\sigma\big(r_\phi(y^w_i) - r_\phi(y^l_i)\big)

    ``chosen (B,)`` are the rewards of the preferred responses, ``rejected (B,)`` of the others.
    ``logsigmoid`` keeps it finite for large margins (``log(sigmoid(.))`` underflows to ``-inf``).
    """
    _same_shape(chosen=chosen, rejected=rejected)
    if chosen.dim() != 1 or chosen.numel() == 0:
        raise ValueError(f"expected non-empty 1-d reward vectors, got shape {tuple(chosen.shape)}")
    return -F.logsigmoid(chosen - rejected).mean()


def kl_penalised_rewards(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The per-token reward PPO maximises in RLHF (Ziegler et al. 2019; Stiennon et al. 2020):

    .. math::
        r_t = -\beta\big(\log\pi_{\text{old}}(y_t\mid s_t) - \log\pi_{\text{ref}}(y_t\mid s_t)\big)
              + \mathbb 1[t = T]\; r_\phi(x, y),

    with :math:`T` the **last real token** (the ``<eos>``, not the padding slot after it) and
    :math:`r_t = 0` on padding. The KL term is a *reward*, a constant for the optimiser: both
    log-probabilities are detached. Summed over :math:`t` it is the single-sample (k1) estimate of
    :math:`\mathrm{KL}(\pi_{\text{old}}\,\|\,\pi_{\text{ref}})` for this response.

    Args:
        logprobs: ``(B, N)`` log-probabilities of the sampled tokens under the rollout policy.
        ref_logprobs: ``(B, N)`` the same under the frozen reference.
        scores: ``(B,)`` sequence-level scores (reward model, gold, any callable's output).
        mask: ``(B, N)`` response mask.
        kl_coef: :math:`\beta \ge 0`.

    Returns:
        ``(rewards, kl)``: per-token rewards ``(B, N)`` and per-token k1 KL ``(B, N)`` (0 on pads).
    """
    _same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != logprobs.shape[:1]:
        raise ValueError(f"scores must have shape ({logprobs.shape[0]},), one per response, got {tuple(scores.shape)}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    mask = mask.to(logprobs.dtype)
    kl = (logprobs.detach() - ref_logprobs.detach()) * mask
    rewards = -kl_coef * kl
    last = last_token_index(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.detach().to(rewards.dtype)
    return rewards, kl


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Direct Preference Optimisation (Rafailov et al. 2023). With the implicit reward
    :math:`\hat r_\theta(x,y) = \beta\log\frac{\pi_\theta(y|x)}{\pi_{\text{ref}}(y|x)}`,

    .. math:: \mathcal L_{\text{DPO}} = -\frac1B\sum_i\log\sigma\big(\hat r_\theta(x_i,y^w_i) - \hat r_\theta(x_i,y^l_i)\big),

    the Bradley–Terry loss of the implicit reward. Arguments are sequence log-probabilities ``(B,)``
    (sums over response tokens); the reference's are detached (a frozen model, no gradient).

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``, the implicit rewards detached, for logging.
    """
    _same_shape(policy_chosen=policy_chosen, policy_rejected=policy_rejected, ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen = beta * (policy_chosen - ref_chosen.detach())
    rejected = beta * (policy_rejected - ref_rejected.detach())
    return bradley_terry_loss(chosen, rejected), chosen.detach(), rejected.detach()
