"""Reading logged dialogues: checking an offline dataset, batching it, and filtering it by return.

The dataset format is :class:`seqrl.games.dataset.OfflineDataset` (one episode per row, right-padded);
everything here only reads its tensors (``tokens``, ``mask``, ``action_mask``, ``rewards``,
``terminal``, ``returns``) and calls its ``subset``, so any object with those fields works.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch

__all__ = ["Batch", "check_offline_dataset", "batch_at", "sample_batch", "top_fraction", "top_fraction_rows", "filter_composition", "opening_utterances"]


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
    return dataset.subset(top_fraction_rows(dataset.returns, fraction))


def top_fraction_rows(returns: torch.Tensor, fraction: float) -> torch.Tensor:
    """Row indices (ascending) of the ``round(fraction * E)`` (at least 1) highest ``returns (E,)``,
    ties broken by row order: the rows :func:`top_fraction` keeps."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    keep = max(1, round(fraction * len(returns)))
    order = torch.sort(returns.float(), descending=True, stable=True).indices[:keep]
    return torch.sort(order).values


def filter_composition(dataset: Any, fractions: Sequence[float], flag: torch.Tensor | None = None) -> dict[float, dict[str, float]]:
    r"""What filtered BC would train on: for each fraction :math:`x`, the make-up of :func:`top_fraction`.

    For the kept episodes :math:`K_x` (the top :math:`x` by return) it reports ``episodes``
    :math:`|K_x|`, ``return`` (their mean return), the share of each behaviour policy
    :math:`|\{i \in K_x : b_i = \text{name}\}| / |K_x|` under the policy's name, and, if ``flag (E,)``
    (bool, one per episode: e.g. "opens with a blind guess") is given, ``flagged``: the share of
    kept episodes with the flag. Pure counting on the dataset, no training.
    """
    if not fractions:
        raise ValueError("need at least one fraction")
    behaviour = list(getattr(dataset, "behaviour", []))
    if len(behaviour) != len(dataset.returns):
        raise ValueError(f"dataset.behaviour must name the policy of each of the {len(dataset.returns)} episodes")
    if flag is not None:
        flag = torch.as_tensor(flag).bool()
        if flag.shape != dataset.returns.shape:
            raise ValueError(f"flag must be (episodes,) = {tuple(dataset.returns.shape)}, got {tuple(flag.shape)}")
    names = sorted(set(behaviour), key=behaviour.index)
    table = {}
    for fraction in fractions:
        keep = top_fraction_rows(dataset.returns, fraction)
        kept = [behaviour[i] for i in keep.tolist()]
        row = {"episodes": float(len(kept)), "return": float(dataset.returns[keep].double().mean())}
        row.update({name: kept.count(name) / len(kept) for name in names})
        if flag is not None:
            row["flagged"] = float(flag[keep].double().mean())
        table[float(fraction)] = row
    return table


def opening_utterances(texts: Sequence[str], turn_start: str = "<agent>", end_of_turn: str = "<sep>") -> list[str]:
    """The agent's first utterance in each rendered dialogue (``<bos> <agent> u <sep> ...`` -> ``u``)."""
    firsts = []
    for i, text in enumerate(texts):
        if turn_start not in text:
            raise ValueError(f"dialogue {i} has no {turn_start!r}: {text[:60]!r}")
        firsts.append(text.split(turn_start, 1)[1].split(end_of_turn, 1)[0].strip())
    return firsts
