r"""Behaviour policies at the utterance level: each maps a dialogue history to a distribution over
the task's ``U`` well-formed utterances.

* ``random``: :math:`\pi(u \mid h) = 1/U`, redundant questions and blind guesses included.
* ``expert``: the utterance whose reply is most informative about the secret, i.e. of largest
  entropy :math:`H(A[u, S])` with :math:`S` uniform on the consistent set :math:`C(h)` (the expected
  information gain, since the reply is a deterministic function of the secret). Ties go to an
  utterance that can end the game (a guess of a consistent secret), then to the lowest index, so
  the expert is deterministic. In both tasks of the book this greedy rule is optimal: it halves
  the candidates in twenty questions and is binary search in guess-my-number.
* ``guesser``: never asks, guesses a uniformly random secret consistent with the replies: a
  *systematic* mediocre behaviour (linear search in twenty questions, randomised search in
  guess-my-number), whose most frequent utterance is not the expert's.
* ``noisy``: :math:`\epsilon`-greedy around the expert,
  :math:`\pi(u \mid h) = \epsilon/U + (1-\epsilon)\,[u = u^*(h)]`: good and bad utterances from the
  same kind of histories, which is what offline RL needs in its data to improve on it.

A policy over utterances induces a policy over tokens (the per-token view of chapter 07):
:math:`\pi(w \mid h, w_{<i}) = \sum_{u:\ u_{<i} = w_{<i},\ u_i = w} \pi(u \mid h) / \sum_{u:\ u_{<i} = w_{<i}} \pi(u \mid h)`;
:class:`~seqrl.games.play.ScriptedAgent` plays it that way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .task import DialogueTask, Turn

__all__ = ["BehaviourPolicy", "RandomPolicy", "ExpertPolicy", "NoisyPolicy", "GuesserPolicy", "behaviour_policy", "BEHAVIOURS", "reply_entropy"]


def reply_entropy(task: DialogueTask, alive: np.ndarray) -> np.ndarray:
    r"""``(U,)`` entropy in bits of each utterance's reply when the secret is uniform on ``alive``:
    :math:`H_u = -\sum_r p_{u,r}\log_2 p_{u,r}`, :math:`p_{u,r} = |\{s \in C: A[u,s] = r\}| / |C|`."""
    n_alive = int(alive.sum())
    if n_alive == 0:
        raise ValueError("no secret is consistent with the history: the replies contradict the world")
    table = task.answers[:, alive]  # (U, |C|)
    counts = np.stack([(table == r).sum(axis=1) for r in range(len(task.replies))], axis=1)  # (U, R)
    p = counts / n_alive
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)


class BehaviourPolicy:
    """A distribution over utterances given the history; subclasses define :meth:`probabilities`."""

    name = "policy"

    def __init__(self, task: DialogueTask) -> None:
        self.task = task

    def probabilities(self, turns: Sequence[Turn]) -> np.ndarray:  # pragma: no cover - abstract
        """``(U,)`` probabilities of the next utterance given the dialogue so far."""
        raise NotImplementedError

    def sample(self, turns: Sequence[Turn], rng: np.random.Generator) -> int:
        """One utterance index drawn from :meth:`probabilities` with ``rng``."""
        p = self.probabilities(turns)
        return int(rng.choice(len(p), p=p))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.task.name})"


class RandomPolicy(BehaviourPolicy):
    """Uniform over all ``U`` utterances, whatever was said before."""

    name = "random"

    def probabilities(self, turns: Sequence[Turn]) -> np.ndarray:
        return np.full(self.task.n_utterances, 1.0 / self.task.n_utterances)

    def sample(self, turns: Sequence[Turn], rng: np.random.Generator) -> int:
        return int(rng.integers(self.task.n_utterances))


class ExpertPolicy(BehaviourPolicy):
    """The most informative utterance (deterministic; see the module docstring)."""

    name = "expert"

    def __init__(self, task: DialogueTask) -> None:
        super().__init__(task)
        self._choices: dict[bytes, int] = {}  # consistent set -> utterance (the choice depends on nothing else)

    def choose(self, turns: Sequence[Turn]) -> int:
        alive = self.task.consistent(turns)
        key = np.packbits(alive).tobytes()
        if key not in self._choices:
            gain = reply_entropy(self.task, alive)
            can_win = (self.task.answers[:, alive] == self.task.solved_reply).any(axis=1)
            best = gain >= gain.max() - 1e-9
            candidates = np.flatnonzero(best & can_win)
            self._choices[key] = int(candidates[0] if len(candidates) else np.flatnonzero(best)[0])
        return self._choices[key]

    def probabilities(self, turns: Sequence[Turn]) -> np.ndarray:
        p = np.zeros(self.task.n_utterances)
        p[self.choose(turns)] = 1.0
        return p

    def sample(self, turns: Sequence[Turn], rng: np.random.Generator) -> int:
        return self.choose(turns)


class GuesserPolicy(BehaviourPolicy):
    """Uniform over the guesses of secrets still consistent with the replies (no questions)."""

    name = "guesser"

    def __init__(self, task: DialogueTask) -> None:
        super().__init__(task)
        self._wins = task.answers == task.solved_reply  # (U, N): utterance u guesses secret s

    def probabilities(self, turns: Sequence[Turn]) -> np.ndarray:
        alive = self.task.consistent(turns)
        guesses = self._wins[:, alive].any(axis=1).astype(float)  # (U,)
        return guesses / guesses.sum()


class NoisyPolicy(BehaviourPolicy):
    r"""With probability :math:`\epsilon` a uniformly random utterance, else the expert's."""

    name = "noisy"

    def __init__(self, task: DialogueTask, epsilon: float = 0.5) -> None:
        super().__init__(task)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        self.expert = ExpertPolicy(task)

    def probabilities(self, turns: Sequence[Turn]) -> np.ndarray:
        p = np.full(self.task.n_utterances, self.epsilon / self.task.n_utterances)
        p[self.expert.choose(turns)] += 1.0 - self.epsilon
        return p

    def sample(self, turns: Sequence[Turn], rng: np.random.Generator) -> int:
        if rng.random() < self.epsilon:
            return int(rng.integers(self.task.n_utterances))
        return self.expert.choose(turns)


BEHAVIOURS: dict[str, Callable[..., BehaviourPolicy]] = {
    "random": RandomPolicy,
    "noisy": NoisyPolicy,
    "guesser": GuesserPolicy,
    "expert": ExpertPolicy,
}


def behaviour_policy(task: DialogueTask, name: str, **kwargs) -> BehaviourPolicy:
    """The behaviour policy ``name`` (one of :data:`BEHAVIOURS`) of ``task``."""
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour policy {name!r}; expected one of {sorted(BEHAVIOURS)}")
    return BEHAVIOURS[name](task, **kwargs)
