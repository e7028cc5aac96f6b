r"""A two-turn toy dialogue whose optimal Q-values are known by hand: the unit test of offline RL.

The agent says ``a`` or ``b`` twice; the user always replies ``x``. Rendered like the games:

``<bos> <agent> b <sep> <user> x <agent> b <sep> <user> x <eos>``

Rewards come on the turn's end token ``<sep>``: 0 after the first turn; after the second, +1 for
``b b``, -1 for ``b a``, 0 after an opening ``a``. So ``a`` is safe and ``b`` is a gamble that only
pays if followed by another ``b``. The behaviour policy says ``a`` with probability ``p_a = 0.8`` at
each turn, independently. With :math:`\gamma = 1`:

* optimal: :math:`Q^*(h_0, b) = 1 > Q^*(h_0, a) = 0` (say ``b b``, return 1);
* behaviour: :math:`Q^{\pi_\beta}(h_0, b) = 0.2\cdot 1 + 0.8\cdot(-1) = -0.6 < 0`, and cloning copies
  the majority ``a``, return 0;
* ILQL with expectile :math:`\tau`: :math:`V(h_0 b\,x) = e_\tau(\{-1: 0.8, +1: 0.2\})`, positive for
  :math:`\tau > 0.8` (0.385 at :math:`\tau = 0.9`), so ILQL with a high expectile prefers ``b``
  while :math:`\tau = 0.5` (the behaviour's own value, SARSA) prefers ``a``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..text.batching import pad_batch
from ..text.tokenizer import WordTokenizer

__all__ = ["TwoStepToy", "expectile"]


def expectile(values, probs, tau: float) -> float:
    r"""The exact :math:`\tau`-expectile :math:`e` of a discrete distribution: the root of
    :math:`\tau\,\mathbb E[(X-e)_+] = (1-\tau)\,\mathbb E[(e-X)_+]` (bisection to 1e-12).
    :math:`\tau = 0.5` gives the mean; :math:`\tau \to 1` the maximum of the support."""
    values, probs = np.asarray(values, dtype=float), np.asarray(probs, dtype=float)
    if values.shape != probs.shape or values.ndim != 1 or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
        raise ValueError("values and probs must be 1-D of one length, probs a distribution")
    if not 0.0 < tau < 1.0:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    lo, hi = values.min(), values.max()
    for _ in range(200):
        e = 0.5 * (lo + hi)
        excess = tau * (probs * np.clip(values - e, 0, None)).sum() - (1 - tau) * (probs * np.clip(e - values, 0, None)).sum()
        lo, hi = (e, hi) if excess > 0 else (lo, e)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class TwoStepToy:
    """The two-turn toy (module docstring). ``p_a``: behaviour probability of ``a`` at each turn."""

    p_a: float = 0.8

    def tokenizer(self) -> WordTokenizer:
        return WordTokenizer(("a", "b", "x"))

    def render(self, first: str, second: str | None = None) -> str:
        """The dialogue after one or two utterances (unfinished: it ends on the ``<agent>`` prompt)."""
        text = f"<bos> <agent> {first} <sep> <user> x <agent>"
        return text if second is None else text + f" {second} <sep> <user> x <eos>"

    def history(self, first: str | None = None) -> torch.Tensor:
        """``(1, T)`` tokens of the history before the first (``first=None``) or second utterance."""
        tok = self.tokenizer()
        text = "<bos> <agent>" if first is None else self.render(first)
        return torch.tensor([tok.encode(text)])

    def reward(self, first: str, second: str) -> float:
        return 0.0 if first == "a" else (1.0 if second == "b" else -1.0)

    def optimal_q(self) -> dict[str, float]:
        """Hand-computed :math:`Q^*` of each opening (and after ``b``, of each second word)."""
        return {"a": 0.0, "b": 1.0, "b a": -1.0, "b b": 1.0}

    def behaviour_q(self) -> dict[str, float]:
        """Hand-computed :math:`Q^{\\pi_\\beta}` of each opening."""
        p_b = 1.0 - self.p_a
        return {"a": 0.0, "b": p_b * 1.0 + self.p_a * -1.0, "b a": -1.0, "b b": 1.0}

    def ilql_q(self, tau: float) -> dict[str, float]:
        """The Q-values ILQL converges to with expectile ``tau`` (exact, from :func:`expectile`)."""
        v_after_b = expectile([-1.0, 1.0], [self.p_a, 1.0 - self.p_a], tau)
        return {"a": 0.0, "b": v_after_b, "b a": -1.0, "b b": 1.0}

    def dataset(self, n_episodes: int = 256, seed: int = 0):
        """An :class:`~seqrl.games.dataset.OfflineDataset` of ``n_episodes`` behaviour episodes."""
        from ..games.dataset import OfflineDataset

        if n_episodes < 1:
            raise ValueError(f"n_episodes must be positive, got {n_episodes}")
        tok = self.tokenizer()
        generator = torch.Generator().manual_seed(seed)
        says_a = torch.rand(n_episodes, 2, generator=generator) < self.p_a  # (E, 2)
        texts, rows, agent_cols, reward_cols, returns = [], [], [], [], []
        for first_a, second_a in says_a.tolist():
            first, second = ("a" if first_a else "b"), ("a" if second_a else "b")
            text = self.render(first, second)
            ids = tok.encode(text)
            # columns: 0 <bos>, 1 <agent>, 2 word, 3 <sep>, 4 <user>, 5 x, 6 <agent>, 7 word, 8 <sep>, 9 <user>, 10 x, 11 <eos>
            texts.append(text)
            rows.append(ids)
            agent_cols.append([2, 3, 7, 8])
            r = self.reward(first, second)
            reward_cols.append({3: 0.0, 8: r})
            returns.append(r)
        tokens, mask = pad_batch(rows, tok.pad_id)
        action_mask = torch.zeros_like(mask)
        rewards = torch.zeros(tokens.shape)
        for i, (cols, rew) in enumerate(zip(agent_cols, reward_cols)):
            action_mask[i, cols] = 1
            for col, value in rew.items():
                rewards[i, col] = value
        returns_t = torch.tensor(returns)
        return OfflineDataset(
            tokens=tokens, mask=mask, action_mask=action_mask, rewards=rewards,
            terminal=torch.ones(n_episodes, dtype=torch.bool), returns=returns_t, success=returns_t > 0,
            behaviour=["behaviour"] * n_episodes, texts=texts,
        )
