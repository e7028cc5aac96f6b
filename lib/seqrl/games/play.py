r"""The token-level game engine: batched evaluation of any agent that scores next tokens.

An *agent* is any object with ``next_token_logits(tokens, mask) -> (B, V)``: given the dialogue so
far it scores the next token. A GPT (:class:`LanguageModelAgent`), a behaviour-cloned model, ILQL's
perturbed policy :math:`\log\pi_\beta + \beta(Q - V)` and the scripted behaviour policies
(:class:`ScriptedAgent`) all plug in through that one method.

:func:`play` runs ``n_episodes`` games at once. At each step every unfinished game asks the agent
for the next token of its current utterance and samples it with
:func:`seqrl.models.sample_from_logits` (``greedy=True``: the arg-max). When the agent writes the
end-of-turn token ``<sep>`` (or ``max_utterance_tokens`` words without one, in which case the engine
ends the turn for it), the oracle's reply ``<user> ...`` is appended, then ``<agent>`` if the game
goes on or ``<eos>`` if it is over. The agent may write words and ``<sep>``; the other special
tokens are masked out before sampling.

Histories are passed **left-padded**: ``tokens[:, -1]`` is every row's latest token and
``mask`` is 1 on real tokens (the layout :class:`~seqrl.models.GPT` reads with ``attention_mask``).

**Agents with a KV cache.** Recomputing every game's whole history for each new token makes a
game of :math:`T` tokens cost :math:`O(T^2)` token-passes. An agent that also has
``new_cache(batch, capacity)`` (returning a :class:`~seqrl.models.StaticKVCache`, or ``None`` when
it cannot cache), ``cached_logits(new_tokens, attention_mask, cache)`` and ``context_length`` (the
most tokens it reads; a longer game is recomputed from then on) is instead handed only the
tokens each game gained since its previous call: the agent's own last token, or the user's reply
and the next prompt. Rows that gained fewer tokens are left-padded in that chunk, so the cache holds
padding between real tokens (masked, and not counted as positions); games that end are dropped
from it. The logits are those of the full recomputation up to float round-off (a tie between two
tokens' probabilities to the 7th digit may then be sampled differently). ``play(use_cache=False)``
always recomputes. :class:`LanguageModelAgent` and ILQL's agent cache.

Besides the statistics, :func:`play` returns every game as one **right-padded token row**, laid out
like a logged :class:`~seqrl.games.OfflineDataset` row (``tokens``, ``mask``, ``action_mask``: 1 on
the tokens the agent *sampled*, ``rewards``: the turn reward −1 on each turn's last sampled token),
with the sampler's log-probability of each sampled token: what online RL (multi-turn PPO,
:mod:`seqrl.rlhf.multiturn`) trains on.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import torch

from ..models.gpt import GPT, StaticKVCache
from ..models.heads import gather_last
from ..models.sampling import sample_from_logits
from ..utils import evaluating
from .dataset import TURN_REWARD
from .policies import BehaviourPolicy
from .task import END_OF_TURN, DialogueTask, Turn

__all__ = ["Agent", "play", "ScriptedAgent", "LanguageModelAgent", "agent_vocabulary", "parse_dialogue"]


class Agent(Protocol):
    def next_token_logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, V)`` scores of the next token given left-padded ``tokens, mask (B, T)``."""
        ...


def play(
    task: DialogueTask,
    agent: Agent,
    n_episodes: int,
    seed: int = 0,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    max_utterance_tokens: int | None = None,
    use_cache: bool = True,
) -> dict:
    """Play ``n_episodes`` games of ``task`` with ``agent`` in one batch.

    Secrets are ``task.sample_secrets(n_episodes, seed)`` (the same as
    :func:`~seqrl.games.build_dataset` with that seed) and token sampling uses a generator seeded
    with ``seed``, so a call is reproducible.

    ``use_cache``: feed an agent that keeps a KV cache only each game's new tokens (the module
    docstring); ``False`` recomputes every history at every step (the reference path).

    Returns:
        ``dict`` with ``return`` ``(E,)`` float (−turns), ``success`` ``(E,)`` bool, ``turns`` ``(E,)``
        long, ``invalid`` ``(E,)`` long (ill-formed utterances, answered ``pardon ?``),
        ``secrets`` ``(E,)`` long, ``dialogues``: ``E`` rendered dialogues, and each game as one
        right-padded row ``(E, T)`` (``T`` the longest game): ``tokens`` long (``<bos> <agent> ...
        <eos>``, then ``<pad>``), ``mask`` long (1 on real tokens), ``action_mask`` long (1 on the
        tokens the agent sampled: its words and its ``<sep>``; a ``<sep>`` the engine wrote for an
        over-long utterance is not an action), ``rewards`` float (``TURN_REWARD`` = −1 on the last
        sampled token of each turn, 0 elsewhere, so ``rewards.sum(1) == return``) and ``logprobs``
        float (the sampler's log-probability of each sampled token, from the banned-token-masked,
        temperature-scaled logits; 0 off actions and when ``greedy``).
    """
    if not hasattr(agent, "next_token_logits"):
        raise ValueError(f"agent must have a next_token_logits(tokens, mask) method, got {type(agent).__name__}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    tok = task.tokenizer()
    max_words = max(len(u.split()) for u in task.utterances) + 2 if max_utterance_tokens is None else max_utterance_tokens
    if not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_utterance_tokens must be a positive int, got {max_utterance_tokens!r}")
    secrets = task.sample_secrets(n_episodes, seed).tolist()
    E, V = len(secrets), tok.vocab_size
    agent_id, sep, user = tok.token_id("<agent>"), tok.token_id(END_OF_TURN), tok.token_id("<user>")
    banned = (~agent_vocabulary(task)).nonzero().flatten()
    reply_ids, pardon_ids = task.reply_ids, task.pardon_ids

    histories = [[tok.bos_id, agent_id] for _ in range(E)]
    acted = [[0, 0] for _ in range(E)]  # per token: 1 if the agent sampled it
    sampled_logprobs = [[0.0, 0.0] for _ in range(E)]
    turn_ends: list[list[int]] = [[] for _ in range(E)]  # column of each turn's last sampled token
    utterance: list[list[int]] = [[] for _ in range(E)]
    turns: list[list[Turn]] = [[] for _ in range(E)]
    active = list(range(E))
    generator: torch.Generator | None = None
    incremental = _IncrementalScorer.for_agent(agent, E, tok.pad_id) if use_cache else None
    while active:
        logits = incremental.logits(histories, active) if incremental is not None else None
        if logits is None:  # no cache (or it is full): the whole histories
            incremental = None
            tokens, mask = _left_pad([histories[i] for i in active], tok.pad_id)
            logits = agent.next_token_logits(tokens, mask)
        if not isinstance(logits, torch.Tensor) or logits.shape != (len(active), V):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"next_token_logits must return (batch, vocab) = {(len(active), V)}, got {shape}")
        logits = logits.detach().float().clone()
        logits[:, banned.to(logits.device)] = float("-inf")
        stuck = torch.isneginf(logits).all(dim=1)  # an agent that only wants special tokens ends its turn
        logits[stuck, sep] = 0.0
        if generator is None:
            generator = torch.Generator(device=logits.device).manual_seed(int(seed))
        chosen, chosen_logprobs = sample_from_logits(logits, 0.0 if greedy else temperature, top_k, generator)
        still_active = []
        for i, token, logprob in zip(active, chosen.tolist(), chosen_logprobs.tolist()):
            histories[i].append(token)
            acted[i].append(1)
            sampled_logprobs[i].append(logprob)
            last_sampled = len(histories[i]) - 1
            if token != sep:
                utterance[i].append(token)
                if len(utterance[i]) < max_words:
                    still_active.append(i)
                    continue
                histories[i].append(sep)  # too long: the engine ends the turn
                acted[i].append(0)
                sampled_logprobs[i].append(0.0)
            turn_ends[i].append(last_sampled)
            text = tok.decode(utterance[i])
            u = task.utterance_index(text)
            reply = task.reply(secrets[i], u)
            turns[i].append(Turn(u, reply, text))
            histories[i] += [user, *(pardon_ids if reply is None else reply_ids[reply])]
            utterance[i] = []
            if task.is_over(turns[i]):
                histories[i].append(tok.eos_id)
            else:
                histories[i].append(agent_id)
                still_active.append(i)
            observed = len(histories[i]) - len(acted[i])  # the reply and the next prompt: observations
            acted[i] += [0] * observed
            sampled_logprobs[i] += [0.0] * observed
        active = still_active
    n_turns = torch.tensor([len(t) for t in turns])
    rows = _right_pad(histories, acted, sampled_logprobs, turn_ends, tok.pad_id)
    return {
        "return": -n_turns.float(),
        "success": torch.tensor([t[-1].reply == task.solved_reply for t in turns]),
        "turns": n_turns,
        "invalid": torch.tensor([sum(turn.utterance is None for turn in t) for t in turns]),
        "secrets": torch.tensor(secrets),
        "dialogues": [tok.decode(h) for h in histories],
        **rows,
    }


class _IncrementalScorer:
    """Hands an agent with a KV cache only the tokens each game gained since the previous step.

    Cache row ``r`` holds game ``games[r]``; ``fed[i]`` counts game ``i``'s tokens already in the
    cache; ``slots (rows, capacity)`` marks the cache slots holding real tokens (the rest is the
    left padding of the chunks), which is the attention mask of every call.
    """

    def __init__(self, agent: Any, cache: StaticKVCache, n_games: int, pad_id: int) -> None:
        self.agent, self.cache, self.pad_id = agent, cache, pad_id
        self.games = list(range(n_games))
        self.fed = [0] * n_games
        self.slots = torch.zeros(n_games, cache.capacity, dtype=torch.long, device=cache.keys.device)

    @classmethod
    def for_agent(cls, agent: Any, n_games: int, pad_id: int) -> "_IncrementalScorer | None":
        if not all(hasattr(agent, name) for name in ("new_cache", "cached_logits", "context_length")):
            return None
        cache = agent.new_cache(n_games, CACHE_SLOTS)
        return None if cache is None else cls(agent, cache, n_games, pad_id)

    def logits(self, histories: Sequence[Sequence[int]], active: Sequence[int]) -> torch.Tensor | None:
        """``(len(active), V)`` next-token logits of the active games, or ``None`` if the cache is full."""
        if self.games != list(active):  # some games ended: drop their rows
            row_of = {game: r for r, game in enumerate(self.games)}
            keep = torch.tensor([row_of[i] for i in active], device=self.slots.device)
            self.cache.select(keep)
            self.slots = self.slots[keep]
            self.games = list(active)
        new = [histories[i][self.fed[i]:] for i in active]
        start, width = self.cache.length, max(map(len, new))
        if start + width > self.cache.capacity or max(len(histories[i]) for i in active) > self.agent.context_length:
            return None
        tokens, mask = _left_pad(new, self.pad_id)
        self.slots[:, start : start + width] = mask.to(self.slots.device)
        logits = self.agent.cached_logits(tokens, self.slots[:, : start + width], self.cache)
        for i in active:
            self.fed[i] = len(histories[i])
        return logits


# Slots of a game's KV cache: its real tokens plus the padding of the steps at which other games
# gained more tokens than it did. Full, play() falls back to recomputing the histories.
CACHE_SLOTS = 512


def agent_vocabulary(task: DialogueTask) -> torch.Tensor:
    """``(V,)`` bool: the tokens the agent may write (every word and the end-of-turn ``<sep>``; not the
    other special tokens, which only the engine writes). :func:`play` samples from these only."""
    tok = task.tokenizer()
    allowed = torch.ones(tok.vocab_size, dtype=torch.bool)
    allowed[[tok.token_id(s) for s in tok.specials if s != END_OF_TURN]] = False
    return allowed


def _right_pad(histories: Sequence[Sequence[int]], acted: Sequence[Sequence[int]], logprobs: Sequence[Sequence[float]],
               turn_ends: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """The games as right-padded ``(E, T)`` rows: tokens, mask, action_mask, rewards, logprobs."""
    E, T = len(histories), max(map(len, histories))
    tokens = np.full((E, T), pad_id, dtype=np.int64)
    mask = np.zeros((E, T), dtype=np.int64)
    action_mask = np.zeros((E, T), dtype=np.int64)
    rewards = np.zeros((E, T), dtype=np.float32)
    token_logprobs = np.zeros((E, T), dtype=np.float32)
    for b, (row, acts, lps, ends) in enumerate(zip(histories, acted, logprobs, turn_ends)):
        n = len(row)
        tokens[b, :n], mask[b, :n], action_mask[b, :n], token_logprobs[b, :n] = row, 1, acts, lps
        rewards[b, list(ends)] = TURN_REWARD
    return {"tokens": torch.from_numpy(tokens), "mask": torch.from_numpy(mask), "action_mask": torch.from_numpy(action_mask),
            "rewards": torch.from_numpy(rewards), "logprobs": torch.from_numpy(token_logprobs)}


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(map(len, rows))
    tokens = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for b, row in enumerate(rows):
        tokens[b, length - len(row):] = row
        mask[b, length - len(row):] = 1
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def parse_dialogue(task: DialogueTask, ids: Sequence[int]) -> tuple[list[Turn], list[int]]:
    """Split a dialogue's token ids into its finished turns and the words of the utterance being
    written (empty right after an ``<agent>`` prompt). Padding is skipped."""
    tok = task.tokenizer()
    agent_id, sep, user, pad = tok.token_id("<agent>"), tok.token_id(END_OF_TURN), tok.token_id("<user>"), tok.pad_id
    reply_index = {ids: k for k, ids in enumerate(task.reply_ids)}
    turns: list[Turn] = []
    words: list[int] = []
    reply: list[int] = []
    where = "start"
    for token in ids:
        if token == pad:
            continue
        if token == agent_id or token == tok.eos_id:
            if where == "reply":
                text = tok.decode(words)
                turns.append(Turn(task.utterance_index(text), reply_index.get(tuple(reply)), text))
                words, reply = [], []
            where = "utterance" if token == agent_id else "over"
        elif token == sep:
            where = "ended"
        elif token == user:
            where = "reply"
        elif where == "utterance":
            words.append(token)
        elif where == "reply":
            reply.append(token)
    return turns, (words if where == "utterance" else [])


class ScriptedAgent:
    r"""A behaviour policy over utterances, played token by token.

    The token distribution is the utterance distribution's prefix marginal: after the words
    :math:`w_{<i}` of the current utterance,
    :math:`\pi(w_i \mid h, w_{<i}) \propto \sum_{u:\ u_{<i} = w_{<i},\ u_i = w_i} \pi(u \mid h)`
    (with ``<sep>`` as each utterance's last token), so sampling tokens samples utterances from
    :math:`\pi(u \mid h)`, and greedy decoding of the deterministic expert writes its utterance.
    """

    def __init__(self, task: DialogueTask, policy: BehaviourPolicy | str, **policy_kwargs) -> None:
        self.task = task
        self.policy = task.policy(policy, **policy_kwargs) if isinstance(policy, str) else policy
        if self.policy.task is not task:
            raise ValueError("the policy belongs to a different task")
        tok = task.tokenizer()
        self._sep = tok.token_id(END_OF_TURN)
        self._utterances = [ids + (self._sep,) for ids in task.utterance_ids]
        self._cache: dict[tuple, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.policy.name

    def token_distribution(self, ids: Sequence[int]) -> np.ndarray:
        """``(V,)`` probabilities of the next token after the dialogue ``ids``."""
        turns, words = parse_dialogue(self.task, ids)
        key = tuple((t.utterance, t.reply) for t in turns)
        if key not in self._cache:
            self._cache[key] = self.policy.probabilities(turns)
        p_utterance = self._cache[key]
        k = len(words)
        prefix = tuple(words)
        out = np.zeros(self.task.tokenizer().vocab_size)
        for u, ids_u in enumerate(self._utterances):
            if p_utterance[u] > 0 and len(ids_u) > k and ids_u[:k] == prefix:
                out[ids_u[k]] += p_utterance[u]
        if out.sum() == 0:  # off the policy's support: end the turn
            out[self._sep] = 1.0
        return out / out.sum()

    def next_token_logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape != mask.shape:
            raise ValueError(f"tokens and mask must be equal (batch, time) shapes, got {tuple(tokens.shape)}, {tuple(mask.shape)}")
        rows = [row[m.bool()].tolist() for row, m in zip(tokens.cpu(), mask.cpu())]
        probs = torch.tensor(np.stack([self.token_distribution(r) for r in rows]), dtype=torch.float32)
        return probs.log().to(tokens.device)

    def __repr__(self) -> str:
        return f"ScriptedAgent({self.task.name}, {self.policy.name})"


class LanguageModelAgent:
    """A GPT playing the game: the next-token logits at each row's last real token (histories left-
    or right-padded), divided by ``temperature``; with a KV cache in :func:`play`.

    Histories longer than the model's ``block_size`` keep their most recent ``block_size`` tokens
    (recomputed: a cache cannot forget its oldest tokens).
    """

    def __init__(self, model: GPT, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use play(..., greedy=True) for greedy), got {temperature}")
        self.model = model
        self.temperature = float(temperature)

    @torch.no_grad()
    def next_token_logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape != mask.shape:
            raise ValueError(f"tokens and mask must be equal (batch, time) shapes, got {tuple(tokens.shape)}, {tuple(mask.shape)}")
        block = self.model.config.block_size
        if tokens.shape[1] > block:  # left-padded (play's layout): the most recent block_size columns
            tokens, mask = tokens[:, -block:], mask[:, -block:]
        device = self.model.device
        with evaluating(self.model):
            out = self.model(tokens.to(device), attention_mask=mask.to(device))
        return gather_last(out.logits, mask.to(device)) / self.temperature

    @property
    def context_length(self) -> int:
        return self.model.config.block_size

    def new_cache(self, batch: int, capacity: int) -> StaticKVCache:
        return StaticKVCache.for_model(self.model, batch, capacity)

    @torch.no_grad()
    def cached_logits(self, new_tokens: torch.Tensor, attention_mask: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """Logits after the left-padded ``new_tokens (B, k)``, the cache holding the earlier ones;
        ``attention_mask (B, cache.length + k)`` marks every real token (see :func:`play`)."""
        device = self.model.device
        with evaluating(self.model):
            out = self.model(new_tokens.to(device), past=cache, attention_mask=attention_mask.to(device))
        return out.logits[:, -1] / self.temperature

