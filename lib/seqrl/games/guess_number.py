r"""Guess my number: the oracle thinks of a number in ``1..N`` and answers ``higher .`` /
``lower .`` / ``correct !``.

A different information structure from twenty questions: every utterance is a guess (there are
no pure questions), the answers are ordered (they say *where* the secret is, not whether it has a
property), and the consistent set is always an interval. The best policy is binary search; with
:math:`N = 2^k - 1` numbers it finds the secret at depth :math:`d` of a perfect binary search tree
with :math:`2^{d-1}` nodes at depth :math:`d`, so its mean number of turns is

.. math:: \mathbb E[\text{turns}] = \frac{1}{N}\sum_{d=1}^{k} d\, 2^{d-1} = \frac{(k-1)\,2^k + 1}{2^k - 1}

(3.27 for :math:`N = 15`), and it never needs more than :math:`k` turns.
"""
from __future__ import annotations

import numpy as np

from .task import DialogueTask

__all__ = ["GuessMyNumber"]

HIGHER, LOWER, CORRECT = 0, 1, 2
REPLIES = ("higher .", "lower .", "correct !")


class GuessMyNumber(DialogueTask):
    """Guess a number in ``1..n``: utterances ``is it m ?``, replies higher/lower/correct."""

    def __init__(self, n: int = 15, turn_limit: int = 8) -> None:
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an int >= 2, got {n!r}")
        numbers = np.arange(1, n + 1)
        guess, secret = numbers[:, None], numbers[None, :]
        answers = np.where(secret > guess, HIGHER, np.where(secret < guess, LOWER, CORRECT))  # (n, n)
        super().__init__(
            name="guess_my_number",
            secrets=tuple(str(m) for m in numbers),
            utterances=tuple(f"is it {m} ?" for m in numbers),
            replies=REPLIES,
            answers=answers,
            solved_reply=CORRECT,
            turn_limit=turn_limit,
        )

    def optimal_mean_turns(self) -> float:
        r"""Mean depth of the secret in the balanced binary search tree over ``1..N`` (the expert's
        mean number of turns): :math:`((k-1)2^k + 1)/(2^k - 1)` when :math:`N = 2^k - 1`."""
        def depths(lo: int, hi: int, depth: int) -> int:
            if lo > hi:
                return 0
            mid = (lo + hi) // 2
            return depth + depths(lo, mid - 1, depth + 1) + depths(mid + 1, hi, depth + 1)

        return depths(1, self.n_secrets, 1) / self.n_secrets
