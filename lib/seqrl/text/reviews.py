"""Synthetic movie reviews: the word-level language of Part 2, with a hidden "human" (the gold scorer).

Grammar (clauses joined by "and", ended by "." and ``<eos>``)::

    REVIEW := CLAUSE ("and" CLAUSE)* "."        CLAUSE := "the" SUBJECT "was" [ADVERB] ADJECTIVE

The gold reward is what a careful reader would say: parse the review; an ungrammatical or
unfinished one (no ``<eos>``) scores -2; otherwise the mean clause sentiment, where an adjective is
+1 (positive), -1 (negative) or 0 (neutral), multiplied by its adverb (very x1.5, really x1.2,
not x-1), minus 0.5 for every clause beyond three (rambling). A reward model trained on a few
preference pairs learns "positive words are good" and is fooled by what it rarely sees:
ungrammatical strings, negation, rambling. That is the Goodhart trap of the RLHF chapters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .tokenizer import WordTokenizer

__all__ = ["ReviewGrammar", "REVIEW_SPECIALS"]

REVIEW_SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>")
UNGRAMMATICAL = -2.0


@dataclass(frozen=True)
class ReviewGrammar:
    """The review language, its sampler and its gold scorer."""

    subjects: tuple[str, ...] = ("movie", "acting", "plot", "music", "ending")
    adverbs: tuple[tuple[str, float], ...] = (("very", 1.5), ("really", 1.2), ("not", -1.0))
    positive: tuple[str, ...] = ("good", "great", "fun", "moving")
    negative: tuple[str, ...] = ("bad", "dull", "boring", "awful")
    neutral: tuple[str, ...] = ("long", "short", "loud", "slow")
    p_adverb: float = 0.3
    p_more: float = 0.45  # probability of one more clause (geometric number of clauses)
    max_clauses: int = 4
    rambling_after: int = 3
    rambling_penalty: float = 0.5

    def __post_init__(self) -> None:
        for name in ("p_adverb", "p_more"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_clauses < 1:
            raise ValueError(f"max_clauses must be at least 1, got {self.max_clauses}")

    # ------------------------------------------------------------------ vocabulary
    @property
    def adjectives(self) -> tuple[str, ...]:
        return self.positive + self.negative + self.neutral

    def words(self) -> tuple[str, ...]:
        """Every word of the language, in a fixed order."""
        return ("the", "was", "and", ".") + self.subjects + tuple(a for a, _ in self.adverbs) + self.adjectives

    def tokenizer(self) -> WordTokenizer:
        """A word tokenizer: ``<pad>``, ``<bos>``, ``<eos>`` and the words (27 symbols by default)."""
        return WordTokenizer(self.words(), REVIEW_SPECIALS)

    def polarity(self, adjective: str) -> float:
        if adjective in self.positive:
            return 1.0
        if adjective in self.negative:
            return -1.0
        return 0.0

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, seed: int) -> list[str]:
        """``n`` reviews (without ``<bos>``/``<eos>``), the same for the same ``seed``."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        rng = np.random.default_rng(seed)
        reviews = []
        for _ in range(n):
            clauses = [self._clause(rng)]
            while len(clauses) < self.max_clauses and rng.random() < self.p_more:
                clauses.append(self._clause(rng))
            reviews.append(" and ".join(clauses) + " .")
        return reviews

    def _clause(self, rng: np.random.Generator) -> str:
        words = ["the", self.subjects[rng.integers(len(self.subjects))], "was"]
        if rng.random() < self.p_adverb:
            words.append(self.adverbs[rng.integers(len(self.adverbs))][0])
        words.append(self.adjectives[rng.integers(len(self.adjectives))])
        return " ".join(words)

    # ------------------------------------------------------------------ gold
    def parse(self, words: Sequence[str]) -> list[float] | None:
        """Clause sentiments of a complete review (words up to and including "."), or ``None``."""
        words = list(words)
        if not words or words[-1] != "." or words.count(".") != 1:
            return None
        words = words[:-1]
        multipliers = dict(self.adverbs)
        clauses, i = [], 0
        while True:
            if words[i : i + 1] != ["the"] or i + 3 > len(words) or words[i + 1] not in self.subjects or words[i + 2] != "was":
                return None
            i += 3
            multiplier = 1.0
            if i < len(words) and words[i] in multipliers:
                multiplier = multipliers[words[i]]
                i += 1
            if i >= len(words) or words[i] not in self.adjectives:
                return None
            clauses.append(self.polarity(words[i]) * multiplier)
            i += 1
            if i == len(words):
                return clauses
            if words[i] != "and":
                return None
            i += 1

    def gold(self, text: str, finished: bool = True) -> float:
        r"""The hidden reward of a review ``text`` (words; ``<eos>`` may end it).

        .. math:: g = \frac{1}{n}\sum_{i=1}^{n} m_i\, s_i - 0.5\,\max(0, n - 3)

        with clause sentiments :math:`s_i \in \{-1, 0, 1\}` and adverb multipliers :math:`m_i`;
        -2 if the review is ungrammatical or unfinished (``finished=False`` or no final ".").
        """
        words = [w for w in text.split() if w not in ("<bos>", "<pad>")]
        if "<eos>" in words:
            words = words[: words.index("<eos>")]
        clauses = self.parse(words) if finished else None
        if clauses is None:
            return UNGRAMMATICAL
        return sum(clauses) / len(clauses) - self.rambling_penalty * max(0, len(clauses) - self.rambling_after)

    def is_grammatical(self, text: str) -> bool:
        words = [w for w in text.split() if w not in ("<bos>", "<eos>", "<pad>")]
        return self.parse(words) is not None
