"""Heads that sit on the GPT trunk's hidden states: one trunk, many readers.

A value head reads :math:`V(s_t)` at every position of a history; a reward model is the same head
read at the last real token. Later parts add twin Q heads for ILQL here.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..text.batching import last_token_index

__all__ = ["ValueHead", "gather_last"]


class ValueHead(nn.Module):
    r"""A scalar per position, :math:`V(h_t) = w^\top h_t + b`.

    ``init="zero"`` starts at :math:`V \equiv 0` (OpenAI's RLHF value head: advantages at step 0 are
    plain discounted rewards and early value updates cannot disturb the policy); ``init="normal"``
    uses :math:`w \sim \mathcal N(0, 1/(d+1))` (the reward-model head of Ziegler et al.).
    """

    def __init__(self, n_embd: int, init: str = "zero") -> None:
        super().__init__()
        if init not in ("zero", "normal"):
            raise ValueError(f"init must be 'zero' or 'normal', got {init!r}")
        self.linear = nn.Linear(n_embd, 1)
        nn.init.zeros_(self.linear.bias)
        if init == "zero":
            nn.init.zeros_(self.linear.weight)
        else:
            nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(n_embd + 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden (..., C)`` -> values ``(...)``."""
        if hidden.shape[-1] != self.linear.in_features:
            raise ValueError(
                f"hidden states have {hidden.shape[-1]} features, the head expects {self.linear.in_features}"
            )
        return self.linear(hidden).squeeze(-1)


def gather_last(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Read ``values (B, T, ...)`` at each row's last real position (last 1 in ``mask (B, T)``).

    This is where a reward model's score lives: on the last real token (EOS), not on the padding
    slot after it.
    """
    if mask.shape != values.shape[:2]:
        raise ValueError(f"mask must have shape {tuple(values.shape[:2])}, got {tuple(mask.shape)}")
    return values[torch.arange(values.shape[0], device=values.device), last_token_index(mask)]
