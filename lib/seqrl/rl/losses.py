"""Policy-gradient losses, written once and used by every chapter (POMDP agents and language models).

All take per-step tensors of shape ``(..., T)`` and an optional ``mask`` of real steps; means are
taken over real steps only, so padding contributes exactly nothing.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .advantages import masked_mean

__all__ = ["reinforce_loss", "ppo_policy_loss", "ppo_value_loss", "PPOStats"]


def _same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"these tensors must have one shape, got {shapes}")


def reinforce_loss(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""The score-function (REINFORCE) surrogate whose gradient is the policy gradient.

    .. math:: \mathcal L(\theta) = -\frac{1}{N}\sum_t \log\pi_\theta(a_t \mid h_t)\, \hat A_t,
              \qquad \nabla_\theta \mathcal L = -\mathbb E\big[\hat A_t \nabla_\theta \log \pi_\theta(a_t\mid h_t)\big]

    ``advantages`` (reward-to-go minus a baseline) are treated as constants: no gradient flows
    through them, even if they came from a learned baseline.
    """
    _same_shape(logprobs=logprobs, advantages=advantages, mask=mask)
    return -masked_mean(logprobs * advantages.detach(), mask)


class PPOStats(NamedTuple):
    """Diagnostics of one PPO minibatch (floats)."""

    clip_fraction: float  # share of steps whose ratio left [1 - eps, 1 + eps]
    approx_kl: float  # E[(log pi_old - log pi)^2] / 2, the k2 estimate of KL(pi_old || pi)
    ratio_mean: float


def ppo_policy_loss(
    logprobs: torch.Tensor,
    logprobs_old: torch.Tensor,
    advantages: torch.Tensor,
    clip: float = 0.2,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, PPOStats]:
    r"""PPO's clipped surrogate (Schulman et al. 2017), as a loss to minimise.

    .. math::
        \rho_t = \exp\big(\log\pi_\theta(a_t|h_t) - \log\pi_{\text{old}}(a_t|h_t)\big), \qquad
        \mathcal L = \mathbb E_t \max\big(-\hat A_t \rho_t,\; -\hat A_t \operatorname{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\big).

    ``logprobs_old`` and ``advantages`` are constants (detached). On the first minibatch of an
    update :math:`\rho_t = 1` exactly, a sanity check worth asserting.
    """
    _same_shape(logprobs=logprobs, logprobs_old=logprobs_old, advantages=advantages, mask=mask)
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clip must be in (0, 1), got {clip}")
    advantages = advantages.detach()
    log_ratio = logprobs - logprobs_old.detach()
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = PPOStats(
            clip_fraction=float(masked_mean(((ratio - 1.0).abs() > clip).to(ratio.dtype), mask)),
            approx_kl=float(masked_mean(0.5 * log_ratio**2, mask)),
            ratio_mean=float(masked_mean(ratio, mask)),
        )
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    values_old: torch.Tensor | None = None,
    clip: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Squared error of the value head against its targets, optionally clipped around the old values.

    .. math:: \mathcal L^V = \tfrac12\mathbb E_t \max\big((V_\theta - \hat R_t)^2,\;
              (\operatorname{clip}(V_\theta, V_{\text{old}} - \epsilon_v, V_{\text{old}} + \epsilon_v) - \hat R_t)^2\big)
    """
    _same_shape(values=values, returns=returns, values_old=values_old, mask=mask)
    returns = returns.detach()
    error = (values - returns) ** 2
    if clip is not None:
        if values_old is None:
            raise ValueError("a clipped value loss needs values_old")
        values_old = values_old.detach()
        clipped = values_old + (values - values_old).clamp(-clip, clip)
        error = torch.maximum(error, (clipped - returns) ** 2)
    return 0.5 * masked_mean(error, mask)
