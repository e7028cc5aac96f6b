r"""A multi-turn language task with a rule-based oracle, described by one answer table.

Every task of Part 3 is a guessing game: the oracle (the "user") holds a hidden *secret*
:math:`s \in \{0, \dots, N-1\}`, the agent writes one utterance per turn, the oracle replies, and
the episode ends when the oracle says ``correct !`` or after ``turn_limit`` turns. Reward is
:math:`-1` per turn, so the return is minus the number of turns.

Such a game is fully described by

* the finite set of well-formed agent utterances :math:`u \in \{0, \dots, U-1\}` (the utterance-
  level action space), each a short word string such as ``"is it big ?"``;
* the set of replies (``"yes ."``, ``"no ."``, ``"correct !"``, ...), one of them the winning one;
* the **answer table** :math:`A \in \{0..R-1\}^{U \times N}`: :math:`A[u, s]` is the oracle's reply to
  :math:`u` when the secret is :math:`s`.

The dialogue is a POMDP: the state is the secret, the agent observes only the replies, and the
set of secrets *consistent* with the history,
:math:`C(h) = \{s : A[u_k, s] = r_k \ \forall k\}`, is a sufficient statistic of the history (the
belief is uniform over it). Tokens: a dialogue renders as

``<bos> <agent> is it big ? <sep> <user> yes . <agent> is it a cat ? <sep> <user> correct ! <eos>``

The agent writes the utterance words and the end-of-turn token ``<sep>`` (its actions); the game
engine writes everything else (``<bos>``, the ``<agent>`` prompt, the ``<user>`` reply, ``<eos>``).
An utterance that is not one of the ``U`` well-formed ones gets the reply ``pardon ?`` and costs a
turn like any other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..text.tokenizer import WordTokenizer

__all__ = ["Turn", "DialogueTask", "END_OF_TURN", "PARDON"]

END_OF_TURN = "<sep>"  # the token the agent writes to end its utterance
PARDON = "pardon ?"  # the oracle's reply to an utterance it cannot parse


@dataclass(frozen=True)
class Turn:
    """One turn of a dialogue: the agent's utterance (its index, or ``None`` when ill-formed) and
    the oracle's reply (its index in ``task.replies``, or ``None`` for ``pardon ?``)."""

    utterance: int | None
    reply: int | None
    text: str = ""  # the utterance as written (useful when it is ill-formed)


class DialogueTask:
    r"""A guessing game given by its utterances, replies and answer table (see the module docstring).

    Args:
        name: the task's name (used in datasets and recipes).
        secrets: names of the ``N`` hidden objects (for rendering; e.g. ``"cat"``, ``"7"``).
        utterances: the ``U`` well-formed agent utterances, as word strings.
        replies: the ``R`` reply strings; ``replies[solved_reply]`` ends the game.
        answers: ``(U, N)`` integer table, ``answers[u, s]`` = reply to ``u`` under secret ``s``.
        solved_reply: the index of the winning reply (``"correct !"``).
        turn_limit: the episode ends after this many turns.
    """

    def __init__(
        self,
        name: str,
        secrets: Sequence[str],
        utterances: Sequence[str],
        replies: Sequence[str],
        answers: np.ndarray,
        solved_reply: int,
        turn_limit: int,
    ) -> None:
        answers = np.asarray(answers)
        U, N = len(utterances), len(secrets)
        if answers.shape != (U, N):
            raise ValueError(f"answers must have shape (utterances, secrets) = {(U, N)}, got {answers.shape}")
        if not np.issubdtype(answers.dtype, np.integer) or answers.min() < 0 or answers.max() >= len(replies):
            raise ValueError(f"answers must hold reply indices in [0, {len(replies)})")
        if not 0 <= solved_reply < len(replies):
            raise ValueError(f"solved_reply must index replies, got {solved_reply}")
        if len(set(utterances)) != U:
            raise ValueError("utterances must be distinct")
        if not isinstance(turn_limit, int) or turn_limit < 1:
            raise ValueError(f"turn_limit must be a positive int, got {turn_limit!r}")
        for s in range(N):
            if not (answers[:, s] == solved_reply).any():
                raise ValueError(f"secret {secrets[s]!r} can never be guessed: no utterance is answered {replies[solved_reply]!r}")
        self.name = name
        self.secrets = tuple(secrets)
        self.utterances = tuple(utterances)
        self.replies = tuple(replies)
        self.answers = answers.astype(np.int64)
        self.solved_reply = int(solved_reply)
        self.turn_limit = turn_limit
        self._utterance_index = {u: i for i, u in enumerate(self.utterances)}
        self._tokenizer = self._make_tokenizer()
        tok = self._tokenizer
        self.utterance_ids = tuple(tuple(tok.encode(u)) for u in self.utterances)  # word ids of each utterance
        self.reply_ids = tuple(tuple(tok.encode(r)) for r in self.replies)
        self.pardon_ids = tuple(tok.encode(PARDON))

    # ------------------------------------------------------------------ sizes
    @property
    def n_secrets(self) -> int:
        return len(self.secrets)

    @property
    def n_utterances(self) -> int:
        return len(self.utterances)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, secrets={self.n_secrets}, utterances={self.n_utterances}, "
                f"turn_limit={self.turn_limit})")

    # ------------------------------------------------------------------ text
    def _make_tokenizer(self) -> WordTokenizer:
        words: list[str] = []
        for text in (*self.utterances, *self.replies, PARDON):
            for word in text.split():
                if word not in words:
                    words.append(word)
        return WordTokenizer(tuple(words))

    def tokenizer(self) -> WordTokenizer:
        """The word tokenizer: the special tokens (``<pad>`` = 0, ``<bos>``, ``<eos>``, ``<sep>`` =
        end of turn, ``<user>``, ``<agent>``) then every word of the utterances and replies."""
        return self._tokenizer

    def utterance_index(self, text: str) -> int | None:
        """Index of a well-formed utterance (whitespace-normalised), or ``None``."""
        return self._utterance_index.get(" ".join(text.split()))

    def utterance_text(self, turn: Turn) -> str:
        """What the agent said in ``turn``."""
        return self.utterances[turn.utterance] if turn.utterance is not None else turn.text

    def reply_text(self, turn: Turn) -> str:
        """What the oracle answered in ``turn``."""
        return self.replies[turn.reply] if turn.reply is not None else PARDON

    def render(self, turns: Sequence[Turn], finished: bool = True) -> str:
        """The dialogue as text: ``<bos> <agent> u <sep> <user> r <agent> ... <eos>``.

        With ``finished=False`` and an unfinished game it ends with the ``<agent>`` prompt.
        """
        pieces = ["<bos>"]
        for turn in turns:
            text = self.utterance_text(turn)
            pieces += ["<agent>", text, END_OF_TURN, "<user>", self.reply_text(turn)] if text else ["<agent>", END_OF_TURN, "<user>", self.reply_text(turn)]
        over = self.is_over(turns)
        if over or finished:
            pieces.append("<eos>")
        else:
            pieces.append("<agent>")
        return " ".join(pieces)

    # ------------------------------------------------------------------ the oracle
    def reply(self, secret: int, utterance: int | None) -> int | None:
        """The oracle: the reply index to utterance ``utterance`` when the secret is ``secret``
        (``None``, i.e. ``pardon ?``, for an ill-formed utterance)."""
        if not 0 <= secret < self.n_secrets:
            raise ValueError(f"secret must be in [0, {self.n_secrets}), got {secret}")
        if utterance is None:
            return None
        return int(self.answers[utterance, secret])

    def answer(self, secret: int, text: str) -> str:
        """The oracle in words: the reply text to the utterance ``text`` (``pardon ?`` if ill-formed)."""
        reply = self.reply(secret, self.utterance_index(text))
        return PARDON if reply is None else self.replies[reply]

    def is_over(self, turns: Sequence[Turn]) -> bool:
        """The game has ended: solved, or the turn limit reached."""
        return len(turns) >= self.turn_limit or (bool(turns) and turns[-1].reply == self.solved_reply)

    def consistent(self, turns: Sequence[Turn]) -> np.ndarray:
        r"""``(N,)`` bool: the secrets consistent with every reply so far,
        :math:`C(h) = \{s : A[u_k, s] = r_k\ \forall k\}` (ill-formed turns carry no information)."""
        alive = np.ones(self.n_secrets, dtype=bool)
        for turn in turns:
            if turn.utterance is not None and turn.reply is not None:
                alive &= self.answers[turn.utterance] == turn.reply
        return alive

    def sample_secrets(self, n: int, seed: int) -> np.ndarray:
        """``(n,)`` secrets drawn uniformly with ``seed`` (the same draw in ``play`` and ``build_dataset``)."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"the number of episodes must be a positive int, got {n!r}")
        generator = torch.Generator().manual_seed(int(seed))
        return torch.randint(self.n_secrets, (int(n),), generator=generator).numpy()

    # ------------------------------------------------------------------ convenience
    def policy(self, name: str, **kwargs):
        """A behaviour policy of this task by name (``"random"``, ``"noisy"``, ``"expert"``)."""
        from .policies import behaviour_policy

        return behaviour_policy(self, name, **kwargs)

    def build_dataset(self, n_episodes: int, mix, seed: int = 0):
        """Logged dialogues of a mix of behaviour policies: see :func:`seqrl.games.build_dataset`."""
        from .dataset import build_dataset

        return build_dataset(self, n_episodes, mix, seed)

    def play(self, agent, n_episodes: int, seed: int = 0, greedy: bool = False, **kwargs):
        """Batched evaluation of ``agent``: see :func:`seqrl.games.play`."""
        from .play import play

        return play(self, agent, n_episodes, seed, greedy=greedy, **kwargs)

    def max_tokens(self) -> int:
        """Length of the longest dialogue of well-formed utterances (``<bos>`` and ``<eos>`` included)."""
        tok = self.tokenizer()
        longest_utterance = max(len(tok.split(u)) for u in self.utterances)
        longest_reply = max(len(tok.split(r)) for r in (*self.replies, PARDON))
        return 2 + self.turn_limit * (longest_utterance + longest_reply + 3)
