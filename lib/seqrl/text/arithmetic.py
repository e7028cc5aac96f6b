"""Two-digit addition: a task with a verifiable reward and an answer space small enough to enumerate.

Prompt ``"a+b="`` (``0 <= a, b <= 99``), response: the digits of the sum and ``<eos>``. The
pretraining corpus contains plausible mistakes (off by one, off by ten) in a fraction of examples,
so the pretrained policy is right most of the time but not always: room for RL to sharpen it.

Because an answer is at most three digits, every response ``y`` can be listed (1,110 strings of one
to three digits, each followed by ``<eos>``). Scoring them all in one batch gives the exact
:math:`\\pi(y \\mid x)`, the exact KL between two policies and the exact KL-regularised optimum, the
ground truth the RLHF chapters test against.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tokenizer import CharTokenizer

__all__ = ["AdditionTask", "ADDITION_SPECIALS"]

ADDITION_SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>")


@dataclass(frozen=True)
class AdditionTask:
    """Prompts, a noisy pretraining corpus, the gold reward and the list of all answers."""

    max_operand: int = 99
    error_rate: float = 0.3
    max_answer_digits: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
        if not 1 <= self.max_operand <= 999:
            raise ValueError(f"max_operand must be in [1, 999], got {self.max_operand}")
        if len(str(2 * self.max_operand)) > self.max_answer_digits:
            raise ValueError("max_answer_digits is too small for the largest sum")

    def tokenizer(self) -> CharTokenizer:
        """Characters ``0-9 + =`` and ``<pad> <bos> <eos>`` (15 symbols)."""
        return CharTokenizer(tuple("0123456789+="), ADDITION_SPECIALS)

    @staticmethod
    def prompt(a: int, b: int) -> str:
        return f"{a}+{b}="

    def operands(self, n: int, seed: int) -> np.ndarray:
        """``(n, 2)`` random operand pairs, uniform on ``[0, max_operand]``."""
        rng = np.random.default_rng(seed)
        return rng.integers(0, self.max_operand + 1, size=(n, 2))

    def prompts(self, n: int, seed: int) -> list[str]:
        return [self.prompt(int(a), int(b)) for a, b in self.operands(n, seed)]

    def corpus(self, n: int, seed: int) -> list[tuple[str, str]]:
        """``n`` (prompt, answer) pairs; a fraction ``error_rate`` of answers is off by ±1 or ±10."""
        rng = np.random.default_rng(seed)
        pairs = []
        for a, b in self.operands(n, seed + 1):
            answer = int(a + b)
            if rng.random() < self.error_rate:
                wrong = answer + int(rng.choice([-10, -1, 1, 10]))
                answer = wrong if wrong >= 0 else answer + 1
            pairs.append((self.prompt(int(a), int(b)), str(answer)))
        return pairs

    @staticmethod
    def parse_prompt(prompt: str) -> tuple[int, int]:
        try:
            left, right = prompt.rstrip("=").split("+")
            return int(left), int(right)
        except ValueError:
            raise ValueError(f"{prompt!r} is not an addition prompt of the form 'a+b='") from None

    def gold(self, prompt: str, response: str, finished: bool = True) -> float:
        """1 for the exact sum (response digits, ``finished`` with ``<eos>``), 0 for a wrong number,
        -1 for something that is not a finished number."""
        a, b = self.parse_prompt(prompt)
        text = response.split("<eos>")[0] if "<eos>" in response else response
        if not finished or not text.isdigit() or len(text) > self.max_answer_digits:
            return -1.0
        return 1.0 if text == str(a + b) else 0.0  # the canonical form: no leading zeros

    def all_answers(self) -> list[str]:
        """Every answer string of one to ``max_answer_digits`` digits, in a fixed order."""
        answers: list[str] = []
        for digits in range(1, self.max_answer_digits + 1):
            answers.extend(f"{i:0{digits}d}" for i in range(10**digits))
        return answers
