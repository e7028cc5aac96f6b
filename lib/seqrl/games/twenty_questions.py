r"""Twenty questions in a world of 16 objects.

The oracle thinks of one object; the agent asks yes/no questions about attributes
(``is it big ?``, ``can it fly ?``) or guesses (``is it a cat ?``). The four attributes
*animal*, *big*, *fly* and *aquatic* give every object a distinct 4-bit code, so a question about
one of them halves any set of candidates that the earlier ones left: the best policy asks
:math:`\log_2 N - 1 = 3` halving questions, then guesses one of the last two candidates, which takes
:math:`\log_2 N + \tfrac12 = 4.5` turns on average. Four more questions are worse: ``is it alive ?``
repeats ``is it an animal ?`` (the second one asked carries no information), ``legs``, ``metal`` and
``yellow`` split the world unevenly.
"""
from __future__ import annotations

import numpy as np

from .task import DialogueTask

__all__ = ["TwentyQuestions", "WORLD", "QUESTIONS"]

# object -> (animal, big, fly, aquatic, alive, legs, metal, yellow)
WORLD: dict[str, tuple[int, ...]] = {
    "pelican":  (1, 1, 1, 1, 1, 1, 0, 0),
    "eagle":    (1, 1, 1, 0, 1, 1, 0, 0),
    "whale":    (1, 1, 0, 1, 1, 0, 0, 0),
    "horse":    (1, 1, 0, 0, 1, 1, 0, 0),
    "duck":     (1, 0, 1, 1, 1, 1, 0, 1),
    "bee":      (1, 0, 1, 0, 1, 1, 0, 1),
    "fish":     (1, 0, 0, 1, 1, 0, 0, 0),
    "cat":      (1, 0, 0, 0, 1, 1, 0, 0),
    "seaplane": (0, 1, 1, 1, 0, 0, 1, 0),
    "plane":    (0, 1, 1, 0, 0, 0, 1, 0),
    "ship":     (0, 1, 0, 1, 0, 0, 1, 0),
    "house":    (0, 1, 0, 0, 0, 0, 0, 0),
    "bubble":   (0, 0, 1, 1, 0, 0, 0, 0),
    "kite":     (0, 0, 1, 0, 0, 0, 0, 1),
    "anchor":   (0, 0, 0, 1, 0, 0, 1, 0),
    "book":     (0, 0, 0, 0, 0, 0, 0, 0),
}

# one question per attribute column of WORLD, in the same order
QUESTIONS: tuple[str, ...] = (
    "is it an animal ?",
    "is it big ?",
    "can it fly ?",
    "is it aquatic ?",
    "is it alive ?",
    "does it have legs ?",
    "is it metal ?",
    "is it yellow ?",
)

YES, NO, CORRECT = 0, 1, 2
REPLIES = ("yes .", "no .", "correct !")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class TwentyQuestions(DialogueTask):
    """Twenty questions over :data:`WORLD`: 8 attribute questions and 16 guesses (24 utterances),
    replies ``yes .`` / ``no .`` / ``correct !``, reward −1 per turn, at most ``turn_limit`` turns."""

    def __init__(self, turn_limit: int = 8) -> None:
        objects = tuple(WORLD)
        attributes = np.array([WORLD[o] for o in objects], dtype=np.int64)  # (N, n_questions)
        guesses = tuple(f"is it {_article(o)} {o} ?" for o in objects)
        question_answers = np.where(attributes.T == 1, YES, NO)  # (n_questions, N)
        guess_answers = np.where(np.eye(len(objects), dtype=bool), CORRECT, NO)  # (N, N)
        super().__init__(
            name="twenty_questions",
            secrets=objects,
            utterances=QUESTIONS + guesses,
            replies=REPLIES,
            answers=np.concatenate([question_answers, guess_answers]),
            solved_reply=CORRECT,
            turn_limit=turn_limit,
        )
        self.attributes = attributes
        self.n_questions = len(QUESTIONS)

    def optimal_mean_turns(self) -> float:
        r"""The theory's number: :math:`\log_2 N + \tfrac12` turns (``N`` a power of two with a
        perfect binary code of attributes, as here)."""
        return float(np.log2(self.n_secrets)) + 0.5
