"""Reading logged dialogues: checking an offline dataset, batching it, and filtering it by return.

The dataset format is :class:`seqrl.games.dataset.OfflineDataset` (one episode per row, right-padded);
everything here only reads its tensors (``tokens``, ``mask``, ``action_mask``, ``rewards``,
``terminal``, ``returns``) and calls its ``subset``, so any object with those fields works.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

__all__ = ["Batch", "check_offline_dataset", "batch_at", "sample_batch", "top_fraction"]


class Batch(NamedTuple):
    """A minibatch of episodes, trimmed to its longest row and moved to the model's device."""

    tokens: torch.Tensor  # (B, T) long
    mask: torch.Tensor  # (B, T) 1 on real tokens
    action_mask: torch.Tensor  # (B, T) 1 on agent tokens
    rewards: torch.Tensor  # (B, T) float
    terminal: torch.Tensor  # (B,) bool


def check_offline_dataset(dataset: Any) -> None:
    """Raise ``ValueError`` naming the problem if ``dataset`` is not a well-formed offline dataset."""
    for name in ("tokens", "mask", "action_mask", "rewards", "terminal", "returns"):
        if not isinstance(getattr(dataset, name, None), torch.Tensor):
            raise ValueError(f"an offline dataset needs a tensor field {name!r}")
    tokens = dataset.tokens
    if tokens.dim() != 2 or tokens.shape[0] == 0:
        raise ValueError(f"dataset.tokens must be a non-empty (episodes, T) tensor, got {tuple(tokens.shape)}")
    for name in ("mask", "action_mask", "rewards"):
        if getattr(dataset, name).shape != tokens.shape:
            raise ValueError(f"dataset.{name} must have the shape of tokens {tuple(tokens.shape)}, got {tuple(getattr(dataset, name).shape)}")
    for name in ("terminal", "returns"):
        if getattr(dataset, name).shape != tokens.shape[:1]:
            raise ValueError(f"dataset.{name} must be (episodes,) = {tuple(tokens.shape[:1])}, got {tuple(getattr(dataset, name).shape)}")
    if bool((dataset.action_mask.bool() & ~dataset.mask.bool()).any()):
        raise ValueError("dataset.action_mask marks padding as an agent token")
    if bool(dataset.action_mask[:, 0].bool().any()):
        raise ValueError("column 0 (<bos>) cannot be an agent token: an action needs a history before it")


def batch_at(dataset: Any, rows: torch.Tensor, device: torch.device | str) -> Batch:
    """The episodes ``rows (B,)`` of ``dataset`` as a :class:`Batch`, trimmed to the longest of them."""
    width = int(dataset.mask[rows].sum(dim=1).max())  # drop columns that are padding in every row

    def take(t: torch.Tensor) -> torch.Tensor:
        return t[rows, :width].to(device)

    return Batch(take(dataset.tokens), take(dataset.mask), take(dataset.action_mask), take(dataset.rewards).float(),
                 dataset.terminal[rows].bool().to(device))


def sample_batch(dataset: Any, batch_size: int, generator: torch.Generator, device: torch.device | str) -> Batch:
    """``batch_size`` episodes drawn uniformly with replacement (reproducibly from ``generator``)."""
    return batch_at(dataset, torch.randint(len(dataset.tokens), (batch_size,), generator=generator), device)


def top_fraction(dataset: Any, fraction: float) -> Any:
    """Filtered BC's data: the ``fraction`` of episodes with the highest return (ties broken by row order).

    Returns ``dataset.subset(index)`` with the kept rows in their original order.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(dataset.returns)
    keep = max(1, round(fraction * n))
    order = torch.sort(dataset.returns.float(), descending=True, stable=True).indices[:keep]
    return dataset.subset(torch.sort(order).values)
