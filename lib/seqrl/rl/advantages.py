"""Advantage estimation and masked statistics, shared by the POMDP and the language-model chapters.

Shapes follow one convention: time is the last dimension, ``(..., T)``; a ``mask`` of the same
shape marks real steps (1) and padding (0). Padding never contributes to a sum, a mean or a
variance, and padded outputs are exactly zero.
"""
from __future__ import annotations

import torch

__all__ = ["masked_mean", "masked_var", "whiten", "gae"]


def _check_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(x)
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of the values {tuple(x.shape)}, got {tuple(mask.shape)}")
    return mask.to(x.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mean over the real entries, :math:`\sum m x / \sum m` (a scalar)."""
    m = _check_mask(x, mask)
    count = m.sum()
    if count == 0:
        raise ValueError("the mask selects no entries: the mean is undefined")
    return (x * m).sum() / count


def masked_var(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Biased variance over the real entries, :math:`\sum m (x - \bar x)^2 / \sum m`."""
    m = _check_mask(x, mask)
    mean = masked_mean(x, m)
    return masked_mean((x - mean) ** 2, m)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    r"""Normalise to unit variance over the real entries: :math:`(x - \bar x)/\sqrt{\operatorname{var} + \epsilon}`.

    With ``shift_mean=False`` the mean is added back (unit variance, original mean), the form used
    for rewards. Padded entries are returned as 0.
    """
    m = _check_mask(x, mask)
    if int(m.sum()) < 2:
        raise ValueError("whitening needs at least two real entries (a minibatch of one has no variance)")
    mean, var = masked_mean(x, m), masked_var(x, m)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    lam: float,
    dones: torch.Tensor | None = None,
    next_value: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalised advantage estimation (Schulman et al. 2016).

    .. math::
        \delta_t = r_t + \gamma (1 - d_t) V_{t+1} - V_t, \qquad
        \hat A_t = \delta_t + \gamma \lambda (1 - d_t) \hat A_{t+1}, \qquad
        \hat R_t = \hat A_t + V_t,

    where :math:`d_t = 1` if the episode ended at step ``t`` (no bootstrap through a terminal) and
    :math:`V_T` is ``next_value`` (0 if not given: the rollout ended with the episode). With a
    ``mask`` (right-padded sequences, e.g. language-model responses), padded steps behave as after a
    terminal: :math:`V` and :math:`r` there are ignored and their advantages are exactly 0.

    Args:
        rewards, values: ``(..., T)``.
        gamma, lam: discount and GAE parameter in ``[0, 1]``.
        dones: ``(..., T)`` booleans, true at an episode's last step.
        next_value: ``(...)`` value of the state after the last step, for truncated rollouts.
        mask: ``(..., T)``, 1 for real steps.

    Returns:
        ``advantages`` and ``returns`` (the value targets :math:`\hat R_t`), both ``(..., T)``.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} must have the same shape")
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x}")
    m = _check_mask(rewards, mask)
    values = values.detach() * m  # the target must not carry gradients into the critic
    rewards = rewards * m
    continues = torch.ones_like(rewards) if dones is None else 1.0 - _check_mask(rewards, dones)
    # A padded step after the last real one acts like a terminal: V_{t+1} = 0 past the end.
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    if next_value is not None:
        next_values[..., -1] = next_value.detach()
    next_real = torch.cat([m[..., 1:], torch.ones_like(m[..., :1]) if next_value is not None else torch.zeros_like(m[..., :1])], dim=-1)
    deltas = rewards + gamma * continues * next_real * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = deltas[..., t] + gamma * lam * continues[..., t] * next_real[..., t] * running
        advantages[..., t] = running
    advantages = advantages * m
    return advantages, (advantages + values) * m
