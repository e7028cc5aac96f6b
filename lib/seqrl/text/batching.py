"""Padding sequences into batches, and the masks that say which positions are real.

Two sides, two uses: *right* padding for training (every row starts at position 0, padding at the
end is masked out of the loss); *left* padding for generation (every prompt ends at the same
column, so new tokens are appended in one column for the whole batch; pass the mask to
``GPT.forward``/``generate`` so positions and attention ignore the padding).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch

__all__ = ["pad_batch", "response_mask", "last_token_index", "lm_inputs_and_targets", "distinct_rows", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # targets with this value are skipped by F.cross_entropy


def pad_batch(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    side: Literal["left", "right"] = "right",
    length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into ``tokens (B, L)`` and ``mask (B, L)`` (1 = real, 0 = pad).

    Args:
        sequences: lists (or 1-D tensors) of token ids, possibly of different lengths.
        pad_id: id written into padded slots.
        side: ``"right"`` (training) or ``"left"`` (prompts for generation).
        length: pad to this length (default: the longest sequence); shorter raises ``ValueError``.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    rows = [torch.as_tensor(list(s) if not isinstance(s, torch.Tensor) else s, dtype=torch.long) for s in sequences]
    for i, row in enumerate(rows):
        if row.dim() != 1:
            raise ValueError(f"sequence {i} must be 1-D, got shape {tuple(row.shape)}")
    longest = max(len(row) for row in rows)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length={length} is shorter than the longest sequence ({longest})")
    tokens = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if n == 0:
            continue
        cols = slice(0, n) if side == "right" else slice(length - n, length)
        tokens[i, cols] = row
        mask[i, cols] = 1
    return tokens, mask


def response_mask(tokens: torch.Tensor, stop_token: int) -> torch.Tensor:
    """Mask ``(B, N)`` of a generated response: 1 up to and including the first ``stop_token``.

    Positions after the stop token (padding) are 0; a row that never stops is all ones.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
    is_stop = (tokens == stop_token).long()
    stops_before = is_stop.cumsum(dim=1) - is_stop  # number of stop tokens strictly before t
    return (stops_before == 0).long()


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` column of each row's last real token in ``mask (B, N)`` (its ``<eos>`` when finished).

    A row with no real token is an error: there is nowhere to put its score.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be (batch, tokens), got shape {tuple(mask.shape)}")
    real = mask.bool()
    if not real.any(dim=1).all():
        empty = (~real.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"rows {empty} of the response mask have no real token")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(real)
    return torch.where(real, positions, -1).max(dim=1).values


def lm_inputs_and_targets(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token prediction pairs from right-padded ``tokens``: ``inputs = x[:, :-1]``,
    ``targets = x[:, 1:]`` with padded targets set to :data:`IGNORE_INDEX`."""
    if tokens.shape != mask.shape or tokens.dim() != 2:
        raise ValueError(f"tokens and mask must be equal (batch, time) shapes, got {tuple(tokens.shape)} and {tuple(mask.shape)}")
    if tokens.shape[1] < 2:
        raise ValueError("sequences need at least two tokens to form next-token targets")
    targets = tokens[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
    return tokens[:, :-1], targets


def distinct_rows(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, inverse)``: the index of one row per distinct row of ``tokens (B, L)`` and, for every
    row, the position of its copy in ``first``, so ``tokens[first][inverse]`` gives back ``tokens``.
    With ``mask``, two rows are alike when they hold the same real tokens in the same places (what
    sits under the padding does not count). Used to compute a prompt that ``k`` samples share once.
    """
    key = tokens if mask is None else tokens.masked_fill(mask == 0, -1)
    distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
    rows = torch.arange(len(key), device=key.device)
    first = torch.zeros(len(distinct), dtype=torch.long, device=key.device).scatter_reduce_(0, inverse, rows, "amin", include_self=False)
    return first, inverse
