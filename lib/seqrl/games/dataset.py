r"""Offline datasets of logged dialogues: the interface between the games and offline RL.

:func:`build_dataset` lets a mix of behaviour policies play ``n_episodes`` games against the
oracle (at the utterance level, which is fast), renders every dialogue as tokens and lays them out
as one right-padded row per episode:

``<bos> <agent> is it big ? <sep> <user> no . <agent> ... <sep> <user> correct ! <eos>``

with ``action_mask`` = 1 on the tokens the agent wrote (utterance words and its end-of-turn
``<sep>``) and the turn's reward :math:`r = -1` on that ``<sep>``, so for every row

.. math:: \text{returns} = \sum_t \text{rewards}_t = -\text{turns}.

Every logged episode ends inside its row (solved, or the turn limit reached), so ``terminal`` is
all true for datasets built here; the field exists for datasets cut to a maximum length.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np
import torch

from .policies import BehaviourPolicy, behaviour_policy
from .task import END_OF_TURN, DialogueTask, Turn

__all__ = ["OfflineDataset", "build_dataset", "standard_dataset", "rollout", "encode_dialogue", "mix_counts",
           "TURN_REWARD", "STANDARD_MIX"]

TURN_REWARD = -1.0
# The book's logged data: a third each of random, noisy (epsilon = 0.5) and expert games.
STANDARD_MIX: dict[str, float] = {"random": 1 / 3, "noisy": 1 / 3, "expert": 1 / 3}


@dataclass
class OfflineDataset:
    """Logged dialogues, one row per episode, right-padded with ``<pad>`` (id 0).

    Attributes:
        tokens: ``(E, T)`` long: ``<bos>`` then the dialogue as rendered text tokens.
        mask: ``(E, T)`` long, 1 on real tokens.
        action_mask: ``(E, T)`` long, 1 where the token was written by the agent (an action).
        rewards: ``(E, T)`` float: the turn reward (−1) on the last agent token of each turn
            (its ``<sep>``), 0 elsewhere.
        terminal: ``(E,)`` bool: the episode ended (solved or turn limit) inside the row.
        returns: ``(E,)`` float: ``rewards.sum(1)``.
        success: ``(E,)`` bool: the oracle said ``correct !``.
        behaviour: ``E`` names of the behaviour policy that wrote each row.
        texts: ``E`` rendered dialogues, for reading.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    action_mask: torch.Tensor
    rewards: torch.Tensor
    terminal: torch.Tensor
    returns: torch.Tensor
    success: torch.Tensor
    behaviour: list[str]
    texts: list[str]

    def __post_init__(self) -> None:
        E, T = self.tokens.shape if self.tokens.dim() == 2 else (None, None)
        if E is None:
            raise ValueError(f"tokens must be (episodes, time), got shape {tuple(self.tokens.shape)}")
        for name in ("mask", "action_mask", "rewards"):
            if getattr(self, name).shape != (E, T):
                raise ValueError(f"{name} must have the shape of tokens {(E, T)}, got {tuple(getattr(self, name).shape)}")
        for name in ("terminal", "returns", "success"):
            if getattr(self, name).shape != (E,):
                raise ValueError(f"{name} must have shape (episodes,) = {(E,)}, got {tuple(getattr(self, name).shape)}")
        for name in ("behaviour", "texts"):
            if len(getattr(self, name)) != E:
                raise ValueError(f"{name} must have one entry per episode ({E}), got {len(getattr(self, name))}")
        if bool((self.action_mask.bool() & ~self.mask.bool()).any()):
            raise ValueError("action_mask marks a padding token as an action")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def subset(self, index: Sequence[int] | torch.Tensor | slice) -> "OfflineDataset":
        """The episodes at ``index`` (a list or tensor of row indices, a bool mask, or a slice)."""
        if isinstance(index, slice):
            rows = torch.arange(len(self))[index]
        else:
            rows = torch.as_tensor(index)
            if rows.dtype == torch.bool:
                if rows.shape != (len(self),):
                    raise ValueError(f"a boolean index must have shape ({len(self)},), got {tuple(rows.shape)}")
                rows = rows.nonzero().flatten()
            rows = rows.long().flatten()
            if rows.numel() and (int(rows.min()) < -len(self) or int(rows.max()) >= len(self)):
                raise ValueError(f"row indices must be in [0, {len(self)})")
        picked = rows.tolist()
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = [value[i] for i in picked] if isinstance(value, list) else value[rows.to(value.device)]
        return OfflineDataset(**out)

    def to(self, device: torch.device | str) -> "OfflineDataset":
        """A copy with every tensor on ``device``."""
        return OfflineDataset(**{f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else list(v))
                                 for f in fields(self)})

    @property
    def turns(self) -> torch.Tensor:
        """``(E,)`` number of turns of each episode (the ``<sep>`` tokens the agent wrote)."""
        return (self.rewards != 0).sum(dim=1)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per behaviour policy (and ``"all"``): episodes, mean return, its standard error, success rate."""
        names = sorted(set(self.behaviour), key=self.behaviour.index) + ["all"]
        table = {}
        for name in names:
            rows = torch.tensor([name in ("all", b) for b in self.behaviour])
            r = self.returns[rows].double()
            table[name] = {
                "episodes": float(rows.sum()),
                "return": float(r.mean()),
                "return_se": float(r.std() / len(r) ** 0.5) if len(r) > 1 else 0.0,
                "success": float(self.success[rows].double().mean()),
            }
        return table


def rollout(task: DialogueTask, policy: BehaviourPolicy, secret: int, rng: np.random.Generator) -> list[Turn]:
    """One game of ``policy`` against the oracle holding ``secret``, at the utterance level."""
    turns: list[Turn] = []
    while not task.is_over(turns):
        u = policy.sample(turns, rng)
        turns.append(Turn(u, task.reply(secret, u)))
    return turns


def encode_dialogue(task: DialogueTask, turns: Sequence[Turn]) -> tuple[list[int], list[int], list[float]]:
    """Token ids of a finished dialogue with, per token, whether the agent wrote it and its reward."""
    tok = task.tokenizer()
    agent, sep, user = tok.token_id("<agent>"), tok.token_id(END_OF_TURN), tok.token_id("<user>")
    ids, acts, rewards = [tok.bos_id], [0], [0.0]
    for turn in turns:
        words = task.utterance_ids[turn.utterance] if turn.utterance is not None else tok.encode(turn.text)
        reply = task.reply_ids[turn.reply] if turn.reply is not None else task.pardon_ids
        ids += [agent, *words, sep, user, *reply]
        acts += [0] + [1] * (len(words) + 1) + [0] * (1 + len(reply))
        rewards += [0.0] * (1 + len(words)) + [TURN_REWARD] + [0.0] * (1 + len(reply))
    ids.append(tok.eos_id)
    acts.append(0)
    rewards.append(0.0)
    return ids, acts, rewards


def mix_counts(mix: Mapping[str, float] | str, n_episodes: int) -> dict[str, int]:
    """Episodes per behaviour policy: weights are normalised, counts rounded by largest remainder."""
    if isinstance(mix, str):
        mix = {mix: 1.0}
    if not isinstance(mix, Mapping) or not mix:
        raise ValueError(f"mix must be a non-empty {{behaviour name: weight}} mapping, got {mix!r}")
    weights = np.array([float(w) for w in mix.values()])
    if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"mix weights must be finite, non-negative and not all zero, got {dict(mix)}")
    exact = weights / weights.sum() * n_episodes
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n_episodes - counts.sum()]:
        counts[i] += 1
    return dict(zip(mix.keys(), counts.tolist()))


def build_dataset(
    task: DialogueTask,
    n_episodes: int,
    mix: Mapping[str, float] | str = "expert",
    seed: int = 0,
    policies: Mapping[str, BehaviourPolicy] | None = None,
) -> OfflineDataset:
    """Let behaviour policies play ``n_episodes`` games and log them as an :class:`OfflineDataset`.

    Args:
        task: the game (e.g. :class:`~seqrl.games.TwentyQuestions`).
        n_episodes: number of episodes ``E``.
        mix: ``{behaviour name: weight}``, e.g. ``{"random": 0.3, "noisy": 0.4, "expert": 0.3}``
            (weights are normalised), or one name.
        seed: secrets are ``task.sample_secrets(E, seed)`` (as in :func:`~seqrl.games.play`), the
            behaviour of each row is a seeded shuffle of the mix, and the policies' own randomness
            comes from ``numpy.random.default_rng(seed)``: the same seed gives the same dataset.
        policies: behaviour policies by name, overriding the defaults (e.g. a noisier ``noisy``).
    """
    if not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive int, got {n_episodes!r}")
    counts = mix_counts(mix, int(n_episodes))
    policies = dict(policies or {})
    for name in counts:
        if name not in policies:
            policies[name] = behaviour_policy(task, name)
    rng = np.random.default_rng(seed)
    names = [name for name, count in counts.items() for _ in range(count)]
    names = [names[i] for i in rng.permutation(len(names))]
    secrets = task.sample_secrets(int(n_episodes), seed)
    rows, acts, rewards, texts, success = [], [], [], [], []
    for name, secret in zip(names, secrets.tolist()):
        turns = rollout(task, policies[name], secret, rng)
        ids, act, rew = encode_dialogue(task, turns)
        rows.append(ids)
        acts.append(act)
        rewards.append(rew)
        texts.append(task.render(turns))
        success.append(turns[-1].reply == task.solved_reply)
    T = max(map(len, rows))
    tokens = torch.full((len(rows), T), task.tokenizer().pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    action_mask = torch.zeros(len(rows), T, dtype=torch.long)
    reward_tensor = torch.zeros(len(rows), T)
    for i, (ids, act, rew) in enumerate(zip(rows, acts, rewards)):
        n = len(ids)
        tokens[i, :n] = torch.tensor(ids)
        mask[i, :n] = 1
        action_mask[i, :n] = torch.tensor(act)
        reward_tensor[i, :n] = torch.tensor(rew)
    return OfflineDataset(
        tokens=tokens,
        mask=mask,
        action_mask=action_mask,
        rewards=reward_tensor,
        terminal=torch.ones(len(rows), dtype=torch.bool),
        returns=reward_tensor.sum(dim=1),
        success=torch.tensor(success, dtype=torch.bool),
        behaviour=names,
        texts=texts,
    )


def standard_dataset(task: DialogueTask, n_episodes: int = 3000, seed: int = 0) -> OfflineDataset:
    """The book's logged dialogues of ``task``: :data:`STANDARD_MIX` (the data of the ``*_bc`` recipes)."""
    return build_dataset(task, n_episodes, STANDARD_MIX, seed)
