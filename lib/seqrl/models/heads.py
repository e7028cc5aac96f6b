"""Heads that sit on the GPT trunk's hidden states: one trunk, many readers.

A value head reads :math:`V(s_t)` at every position of a history; a reward model is the same head
read at the last real token. ILQL (Part 3) reads twin Q heads over the vocabulary and a V head
from the same kind of trunk (:class:`ILQLHeads`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn

from ..text.batching import last_token_index

__all__ = ["ValueHead", "gather_last", "QHead", "ILQLHeads", "ILQLValues"]


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


class QHead(nn.Module):
    r"""One Q-value per vocabulary token at every position: :math:`Q(h_t, a)` for all :math:`a`.

    A two-layer MLP on the trunk's hidden state, :math:`Q(h_t,\cdot) = W_2\,\mathrm{ReLU}(W_1 h_t +
    b_1) + b_2 \in \mathbb R^{|\mathcal V|}` (the head of Snell et al. 2022): the token-level action
    space is the vocabulary, so Q reads like a language model's logits. ``hidden (..., C)`` ->
    ``(..., V)``. The last layer starts at zero, so :math:`Q \equiv 0` before training.
    """

    def __init__(self, n_embd: int, vocab_size: int, width: int | None = None, out: int | None = None) -> None:
        super().__init__()
        width = width or 2 * n_embd
        self.net = nn.Sequential(nn.Linear(n_embd, width), nn.ReLU(), nn.Linear(width, out or vocab_size))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.in_features = n_embd

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[-1] != self.in_features:
            raise ValueError(f"hidden states have {hidden.shape[-1]} features, the head expects {self.in_features}")
        return self.net(hidden)


class ILQLValues(NamedTuple):
    """What :class:`ILQLHeads` reads from hidden states ``(B, T, C)``."""

    q1: torch.Tensor  # (B, T, V) first Q head, Q_1(h_t, a) for every token a
    q2: torch.Tensor  # (B, T, V) second (twin) Q head
    v: torch.Tensor  # (B, T) state value V(h_t)


class ILQLHeads(nn.Module):
    r"""Twin Q heads over the vocabulary and a V head: the value side of ILQL (Snell et al. 2022).

    ``forward(hidden (..., C))`` returns :class:`ILQLValues` ``(q1 (..., V), q2 (..., V), v (...))``.
    Two Q heads trained on the same targets and read through their minimum,
    :math:`\min(Q_1, Q_2)`, counter the over-estimation a max-like backup builds up (clipped double
    Q-learning, Fujimoto et al. 2018). The V head is a :class:`QHead` with one output.
    """

    def __init__(self, n_embd: int, vocab_size: int, width: int | None = None) -> None:
        super().__init__()
        self.q1 = QHead(n_embd, vocab_size, width)
        self.q2 = QHead(n_embd, vocab_size, width)
        self.v = QHead(n_embd, vocab_size, width, out=1)

    def forward(self, hidden: torch.Tensor) -> ILQLValues:
        return ILQLValues(self.q1(hidden), self.q2(hidden), self.v(hidden).squeeze(-1))
