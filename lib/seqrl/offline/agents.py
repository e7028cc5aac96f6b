r"""Agents for the games' evaluator: anything with ``next_token_logits(tokens, mask) -> (B, V)``.

``tokens (B, T)`` is the history so far and ``mask (B, T)`` marks its real tokens (left- or right-
padded: the logits are read at each row's last real token and the GPT ignores padding). The game
engine samples the agent's next token from the returned logits. One interface, three policies:

* :class:`LMAgent`: a language model's own next-token logits (BC, filtered BC, a pretrained model):
  the games' :class:`~seqrl.games.LanguageModelAgent`;
* :class:`ILQLAgent`: ILQL's extracted policy, :math:`\log\pi_\beta + \beta\,(Q - V)`;
* :class:`UtteranceAgent`: the utterance-level variant: at the start of each turn it samples
  candidate utterances from the BC model, scores each with ILQL's Q and commits to the best, then
  writes it token by token (its logits are one-hot-like on the planned token).
"""
from __future__ import annotations

import torch

from ..games.play import LanguageModelAgent
from ..models.gpt import GPT, StaticKVCache
from ..models.heads import gather_last
from .ilql import ILQL
from .objectives import perturbed_logits

__all__ = ["LMAgent", "ILQLAgent", "UtteranceAgent"]


def _check_history(tokens: torch.Tensor, mask: torch.Tensor) -> None:
    if tokens.dim() != 2 or tokens.shape != mask.shape:
        raise ValueError(f"tokens and mask must be equal (B, T) shapes, got {tuple(tokens.shape)} and {tuple(mask.shape)}")


# A GPT as an agent (BC, filtered BC): its next-token logits after each history, with a KV cache in play().
LMAgent = LanguageModelAgent


class ILQLAgent:
    r"""ILQL's policy :math:`\pi(a|h) \propto \pi_\beta(a|h)\exp(\beta(Q(h,a) - V(h)))`.

    :math:`\pi_\beta` is the BC model, :math:`Q = \min(\bar Q_1, \bar Q_2)` the target twins and
    :math:`V` the V head, all read after the history (see
    :func:`~seqrl.offline.objectives.perturbed_logits`).
    """

    def __init__(self, ilql: ILQL, bc_model: GPT, beta: float = 4.0) -> None:
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.ilql, self.bc_model, self.beta = ilql, bc_model, float(beta)

    @torch.no_grad()
    def next_token_logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_history(tokens, mask)
        tokens, mask = tokens.to(self.ilql.device), mask.to(self.ilql.device)
        bc_out = self.bc_model(tokens, attention_mask=mask)
        if self.ilql.trunk is self.bc_model:  # heads on the BC model itself: one forward pass
            q, v = self.ilql.q_and_v_from_hidden(gather_last(bc_out.hidden, mask))
        else:
            q, v = self.ilql.q_and_v(tokens, mask)
            q, v = gather_last(q, mask), gather_last(v, mask)
        return perturbed_logits(gather_last(bc_out.logits, mask), q, v, self.beta)

    @property
    def context_length(self) -> int:
        return self.bc_model.config.block_size

    def new_cache(self, batch: int, capacity: int) -> StaticKVCache | None:
        r"""A KV cache of the BC model when the heads sit on its trunk (one forward pass gives
        :math:`\pi_\beta` and the hidden states); ``None`` (recompute) otherwise."""
        return StaticKVCache.for_model(self.bc_model, batch, capacity) if self.ilql.trunk is self.bc_model else None

    @torch.no_grad()
    def cached_logits(self, new_tokens: torch.Tensor, attention_mask: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """:meth:`next_token_logits` from the tokens new since the last call (see :func:`~seqrl.games.play`)."""
        device = self.ilql.device
        out = self.bc_model(new_tokens.to(device), past=cache, attention_mask=attention_mask.to(device))
        q, v = self.ilql.q_and_v_from_hidden(out.hidden[:, -1])
        return perturbed_logits(out.logits[:, -1], q, v, self.beta)


class UtteranceAgent:
    r"""Utterance-level ILQL: pick the best of ``n_candidates`` utterances from the BC model.

    At a turn start (the last token is the ``turn_start`` prompt, e.g. ``<agent>``), sample
    ``n_candidates`` utterances :math:`u^{(k)}` from :math:`\pi_\beta` (up to ``end_token``, e.g.
    ``<sep>``), score each by the Q-value of its last token,

    .. math:: Q(h, u) = \min(\bar Q_1, \bar Q_2)\big(h\,u_{<L},\ u_L\big),

    which is the value of the whole utterance (the turn's reward plus the value after the reply),
    and commit to the argmax. Then return logits that put (almost) all mass on the planned token, so
    a sampling game engine writes exactly the plan. Plans are remembered per history, so the agent
    is a deterministic function of the history given its seed.
    """

    def __init__(
        self,
        ilql: ILQL,
        bc_model: GPT,
        end_token: int,
        turn_start: int,
        n_candidates: int = 8,
        max_len: int = 8,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        if n_candidates < 1 or max_len < 1:
            raise ValueError(f"n_candidates and max_len must be positive, got {n_candidates} and {max_len}")
        self.ilql, self.bc_model = ilql, bc_model
        self.end_token, self.turn_start = int(end_token), int(turn_start)
        self.n_candidates, self.max_len, self.temperature = n_candidates, max_len, temperature
        self.generator = torch.Generator(device=bc_model.device).manual_seed(seed)
        self._plans: dict[tuple[int, ...], list[int]] = {}

    @torch.no_grad()
    def _plan(self, history: list[int]) -> list[int]:
        """The best of ``n_candidates`` BC utterances after ``history``, by Q of its last token."""
        device = self.bc_model.device
        room = self.bc_model.config.block_size - len(history)
        if room < 1:
            raise ValueError(f"history of {len(history)} tokens leaves no room for an utterance")
        prompt = torch.tensor(history, device=device).expand(self.n_candidates, -1)
        generated = self.bc_model.generate(prompt, min(self.max_len, room), temperature=self.temperature,
                                           stop_token=self.end_token, generator=self.generator).tokens  # (K, L)
        candidates = []
        for row in generated.tolist():
            cut = row.index(self.end_token) + 1 if self.end_token in row else len(row)
            candidates.append(row[:cut])
        width = max(len(c) for c in candidates)
        seqs = torch.zeros(self.n_candidates, len(history) + width, dtype=torch.long, device=device)
        for k, cand in enumerate(candidates):
            seqs[k, : len(history) + len(cand)] = torch.tensor(history + cand, device=device)
        q, _ = self.ilql.q_and_v(seqs)  # right padding: no mask needed for the real columns
        last = torch.tensor([len(history) + len(c) - 1 for c in candidates], device=device)  # column of u_L
        rows = torch.arange(self.n_candidates, device=device)
        scores = q[rows, last - 1, seqs[rows, last]]  # Q(h u_{<L}, u_L)
        return candidates[int(scores.argmax())]

    @torch.no_grad()
    def next_token_logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_history(tokens, mask)
        vocab = self.bc_model.config.vocab_size
        out = torch.full((tokens.shape[0], vocab), -1e4, device=self.bc_model.device)
        for b, (row, row_mask) in enumerate(zip(tokens.tolist(), mask.tolist())):
            history = [t for t, m in zip(row, row_mask) if m]
            starts = [i for i, t in enumerate(history) if t == self.turn_start]
            if not starts:
                raise ValueError(f"row {b} has no turn-start token {self.turn_start}: cannot find the agent's turn")
            prefix, written = tuple(history[: starts[-1] + 1]), history[starts[-1] + 1 :]
            if prefix not in self._plans:
                self._plans[prefix] = self._plan(list(prefix))
            plan = self._plans[prefix]
            token = plan[len(written)] if len(written) < len(plan) else self.end_token
            out[b, token] = 0.0
        return out
