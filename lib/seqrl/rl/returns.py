"""Discounted returns (reward-to-go), the quantity every policy-gradient estimator starts from."""
from __future__ import annotations

import torch

__all__ = ["discounted_returns"]


def discounted_returns(rewards: torch.Tensor, gamma: float, dones: torch.Tensor | None = None) -> torch.Tensor:
    r"""Reward-to-go along the last dimension.

    .. math:: G_t = \sum_{k=t}^{T-1} \gamma^{k-t} r_k = r_t + \gamma (1 - d_t) G_{t+1}, \qquad G_T = 0,

    where :math:`d_t = 1` marks the last step of an episode, so returns never leak across episodes
    that share a row.

    Args:
        rewards: ``(..., T)`` rewards.
        gamma: discount in ``[0, 1]``.
        dones: optional ``(..., T)`` booleans, true at the last step of each episode.

    Returns:
        ``(..., T)`` returns, same dtype as ``rewards`` (float).
    """
    if not isinstance(rewards, torch.Tensor):
        rewards = torch.as_tensor(rewards)
    if rewards.dim() == 0:
        raise ValueError("rewards must have a time dimension (shape (..., T)), got a scalar")
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    rewards = rewards.float() if not rewards.is_floating_point() else rewards
    if dones is None:
        continues = torch.ones_like(rewards)
    else:
        dones = torch.as_tensor(dones, device=rewards.device)
        if dones.shape != rewards.shape:
            raise ValueError(f"dones must have the shape of rewards {tuple(rewards.shape)}, got {tuple(dones.shape)}")
        continues = 1.0 - dones.to(rewards.dtype)
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * continues[..., t] * running
        returns[..., t] = running
    return returns
