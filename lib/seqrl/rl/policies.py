r"""Policies that read histories: one *trunk* summarises :math:`h_t = (o_0, \dots, o_t)` into a
feature vector :math:`z_t`, and small heads read it (one trunk, many readers, as in
:mod:`seqrl.models.heads`).

================  =====================================  ==========================================
trunk             what :math:`z_t` can depend on         memory carried between steps (``state``)
================  =====================================  ==========================================
FrameStackTrunk   the last :math:`k` observations         the window ``(N, k, d)``; :math:`k=1`: memoryless
GRUTrunk          the whole history (lossy, fixed size)  the hidden vector ``(N, H)``
GPTTrunk          the whole history (exact)              the key/value cache of the episode so far
================  =====================================  ==========================================

Every trunk has two faces that compute the same numbers (the tests check this):

* ``forward(obs (N, T, d)) -> (N, T, H)`` reads whole episodes at once, each row from its first
  step: training.
* ``step(obs (N, d), state) -> (z (N, H), state)`` reads one observation per episode and carries the
  memory: acting. ``initial_state(N)`` is an empty memory and ``reset_state(state, done)`` empties
  the rows whose episode just ended, so a vectorised rollout never leaks one episode into the next.

:class:`ActorCritic` puts a policy head :math:`\pi(a \mid h_t) = \operatorname{softmax}(W z_t)` and a
value head :math:`V(h_t)` on a trunk; :func:`make_policy` builds the book's five policy classes.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..models import GPT, GPTConfig, ValueHead
from ..models.gpt import StaticKVCache  # not re-exported by seqrl.models (not this module's file)
from ..pomdp.wrappers import frame_stack, push_frame

__all__ = ["FrameStackTrunk", "GRUTrunk", "GPTTrunk", "GPTState", "ActorCritic", "make_policy", "POLICY_KINDS"]


def _check_obs(obs: torch.Tensor, obs_dim: int, dims: int) -> None:
    shape = "(N, T, obs_dim)" if dims == 3 else "(N, obs_dim)"
    if obs.dim() != dims or obs.shape[-1] != obs_dim:
        raise ValueError(f"observations must have shape {shape} with obs_dim={obs_dim}, got {tuple(obs.shape)}")


def _check_done(done: torch.Tensor, n: int) -> torch.Tensor:
    if done.shape != (n,):
        raise ValueError(f"done must have shape ({n},), one flag per episode, got {tuple(done.shape)}")
    return done.bool()


class FrameStackTrunk(nn.Module):
    r"""An MLP on the window of the last ``k`` observations, :math:`z_t = \mathrm{MLP}([o_{t-k+1}, \dots, o_t])`.

    ``k = 1`` is the memoryless policy :math:`\pi(a \mid o_t)`.
    """

    def __init__(self, obs_dim: int, k: int = 1, hidden: int = 64) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.obs_dim, self.k, self.out_dim = obs_dim, k, hidden
        self.mlp = nn.Sequential(nn.Linear(k * obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(N, T, d)`` episodes -> ``(N, T, H)`` features."""
        _check_obs(obs, self.obs_dim, 3)
        return self.mlp(frame_stack(obs, None, self.k))  # (N, T, k*d) -> (N, T, H)

    def initial_state(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.k, self.obs_dim, device=self.mlp[0].weight.device)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_obs(obs, self.obs_dim, 2)
        window = push_frame(state, obs)  # (N, k, d)
        return self.mlp(window.flatten(1)), window

    def reset_state(self, state: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        done = _check_done(done, state.shape[0])
        return state * ~done[:, None, None]


class GRUTrunk(nn.Module):
    r"""A gated recurrent unit (Cho et al. 2014) over encoded observations:
    :math:`z_t = \mathrm{GRU}(z_{t-1}, \tanh(W o_t))`, :math:`z_{-1} = 0`.
    """

    def __init__(self, obs_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.obs_dim, self.out_dim = obs_dim, hidden
        self.encoder = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)

    def forward(self, obs: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, T, d)`` episodes -> ``(N, T, H)``, from ``initial (N, H)`` (default: zeros)."""
        _check_obs(obs, self.obs_dim, 3)
        h0 = None if initial is None else initial[None].contiguous()  # (1, N, H)
        features, _ = self.gru(self.encoder(obs), h0)
        return features

    def initial_state(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.out_dim, device=self.encoder[0].weight.device)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_obs(obs, self.obs_dim, 2)
        g = self.gru  # one step with the sequence GRU's own weights (the cell kernel is cheaper)
        h = torch.gru_cell(self.encoder(obs), state, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        return h, h

    def reset_state(self, state: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        done = _check_done(done, state.shape[0])
        return state * ~done[:, None]


class GPTState:
    """The memory of :class:`GPTTrunk`: a :class:`~seqrl.models.gpt.StaticKVCache` of ``block_size``
    positions and which of its slots are live. Updated in place by ``step`` and ``reset_state``.

    ``mask (N, block_size)`` is 1 for slots holding a position of a row's current episode and 0 for
    slots of earlier episodes (or unused ones), exactly the GPT's padding mask: masked keys are never
    attended to and positions are counted over live slots only, so a new episode starts at position
    0 whatever is still in the cache. Slots of ended episodes are reclaimed only when the cache is
    full (or at once, when every row has ended), so most steps move no cached key or value.
    """

    def __init__(self, cache: StaticKVCache, mask: torch.Tensor) -> None:
        self.cache, self.mask = cache, mask  # mask: (N, capacity)
        self.all_live = True  # every used slot is live: the GPT's plain causal path, no mask needed

    @property
    def n(self) -> int:
        return self.cache.batch_size

    @property
    def length(self) -> int:
        """Slots in use (live or dead), at most ``block_size``."""
        return self.cache.length

    def longest_episode(self) -> int:
        """Steps of the longest live episode (what the cache must hold at least)."""
        return int(self.mask[:, : self.length].sum(dim=1).max()) if self.length else 0


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    r"""``(length, dim)`` sinusoidal position codes, :math:`\sin/\cos(t / 10000^{2i/d})`."""
    positions = torch.arange(length, dtype=torch.float32)[:, None]
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    codes = torch.zeros(length, dim)
    codes[:, 0::2] = torch.sin(positions * frequencies)
    codes[:, 1::2] = torch.cos(positions * frequencies)[:, : dim // 2]
    return codes


class GPTTrunk(nn.Module):
    r"""The book's GPT (:class:`seqrl.models.GPT`) reading observation vectors instead of tokens:
    :math:`z_t = \mathrm{GPT}(W o_0, \dots, W o_t)_t` through ``inputs_embeds``, causal attention over
    the whole episode.

    The attention starts with a prior toward recent steps (``recency``; 0 keeps GPT-2's random init):
    the head that reads the fast position frequencies weights the last few steps most, the one that
    reads the slow frequencies spreads over the episode, and training moves them where they are needed.

    ``block_size`` must be at least the longest episode. Acting uses a key/value cache of
    ``block_size`` positions allocated once (:class:`~seqrl.models.gpt.StaticKVCache`): each step costs
    one token's forward pass and writes one position in place, ``reset_state`` masks a finished
    row's cached positions out, and the slots of ended episodes are reclaimed when the cache is full.
    """

    def __init__(self, obs_dim: int, n_embd: int = 32, n_layer: int = 1, n_head: int = 2, block_size: int = 64,
                 recency: float = 0.25) -> None:
        super().__init__()
        if recency < 0:
            raise ValueError(f"recency must be >= 0, got {recency}")
        self.obs_dim, self.out_dim = obs_dim, n_embd
        self.embed = nn.Linear(obs_dim, n_embd)
        # vocab_size 1: the token embedding and LM head are unused (observations come as vectors).
        self.gpt = GPT(GPTConfig(vocab_size=1, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd))
        with torch.no_grad():
            # Sinusoidal positions (Vaswani et al. 2017) instead of random ones: nearby steps get similar
            # codes and "the step before" is a fixed linear map, so the first policy behaves sensibly at
            # steps that short early episodes never reached. They remain trainable.
            self.gpt.pos_emb.weight.copy_(_sinusoids(block_size, n_embd))
            # A recency prior: W_q = W_k = sqrt(recency) I, so the score of step s seen from step t starts
            # as recency * <LN(x_t), LN(x_s)> / sqrt(d_head), and with sinusoidal positions
            # <p_t, p_s> = sum_i cos(w_i (t - s)) is largest for the latest steps. GPT-2's init (std 0.02,
            # chosen for 768 dimensions) starts every past step at the same weight; on CartPole without
            # velocities, where the last steps matter, PPO needs fewer iterations with the prior (chapter 03).
            if recency > 0:
                for block in self.gpt.blocks:
                    block.attn.qkv.weight[: 2 * n_embd] = math.sqrt(recency) * torch.eye(n_embd).repeat(2, 1)  # q, k rows

    @property
    def block_size(self) -> int:
        return self.gpt.config.block_size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(N, T, d)`` episodes -> ``(N, T, C)``: one causal pass (right padding after an episode
        ends is harmless, no real step attends to a later one)."""
        _check_obs(obs, self.obs_dim, 3)
        return self.gpt(None, inputs_embeds=self.embed(obs)).hidden

    def initial_state(self, n: int) -> GPTState:
        cache = StaticKVCache.for_model(self.gpt, n)  # (n_layer, n, n_head, block_size, head_dim), allocated once
        return GPTState(cache, torch.zeros(n, self.block_size, dtype=torch.long, device=cache.keys.device))

    def step(self, obs: torch.Tensor, state: GPTState) -> tuple[torch.Tensor, GPTState]:
        """One token's forward pass, its keys and values written into the cache in place (acting
        only: the state is not differentiable; training reads whole episodes with ``forward``)."""
        _check_obs(obs, self.obs_dim, 2)
        n = obs.shape[0]
        if state.n != n:
            raise ValueError(f"the state holds {state.n} episodes, got observations for {n}")
        if state.length == self.block_size:
            self._compact(state)
        state.mask[:, state.length] = 1
        # While no row has been reset every cached slot is live: the plain (faster) causal path.
        attention_mask = None if state.all_live else state.mask[:, : state.length + 1]  # (N, T_cache + 1)
        out = self.gpt(None, past=state.cache, attention_mask=attention_mask, inputs_embeds=self.embed(obs)[:, None])
        return out.hidden[:, 0], state

    def reset_state(self, state: GPTState, done: torch.Tensor) -> GPTState:
        done = _check_done(done, state.n)
        if state.length == 0 or not bool(done.any()):
            return state
        live = state.mask[:, : state.length]
        live.mul_(~done[:, None])
        if not bool(live.any()):  # every episode ended: the whole cache is free
            state.cache.length, state.all_live = 0, True
        else:
            state.all_live = False
        return state

    def _compact(self, state: GPTState) -> None:
        """Move each row's live slots to the front (in order) and free the rest: run only when the
        cache is full, so the cost of gathering the cache is paid once per ``block_size`` steps at most."""
        live = state.mask[:, : state.length]  # (N, T_cache)
        keep = state.longest_episode()
        if keep >= self.block_size:
            raise ValueError(f"an episode longer than block_size={self.block_size} steps: build the trunk with a larger block_size")
        order = torch.sort(live, dim=1, descending=True, stable=True).indices[:, :keep]  # (N, keep): live slots first
        cache = state.cache
        for buffer in (cache.keys, cache.values):  # (n_layer, N, n_head, capacity, head_dim)
            index = order[None, :, None, :, None].expand(buffer.shape[0], -1, buffer.shape[2], -1, buffer.shape[4])
            buffer[:, :, :, :keep] = buffer[:, :, :, : state.length].gather(3, index)
        kept = live.gather(1, order)  # (N, keep)
        state.mask.zero_()
        state.mask[:, :keep] = kept
        cache.length, state.all_live = keep, bool(kept.all())


class ActorCritic(nn.Module):
    r"""A policy head and a value head on one history trunk:
    :math:`\pi_\theta(a \mid h_t) = \operatorname{softmax}(W_\pi z_t + b_\pi)`, :math:`V(h_t) = w_V^\top z_t + b_V`.

    The policy head starts near zero (CleanRL's 0.01 gain), so the first policy is close to uniform;
    the value head starts at exactly 0 (:class:`~seqrl.models.ValueHead`).
    """

    def __init__(self, trunk: nn.Module, n_actions: int) -> None:
        super().__init__()
        if n_actions < 2:
            raise ValueError(f"a policy needs at least two actions, got {n_actions}")
        self.trunk, self.n_actions = trunk, n_actions
        self.policy_head = nn.Linear(trunk.out_dim, n_actions)
        nn.init.normal_(self.policy_head.weight, std=0.01)
        nn.init.zeros_(self.policy_head.bias)
        self.value_head = ValueHead(trunk.out_dim)

    @property
    def device(self) -> torch.device:
        return self.policy_head.weight.device

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole episodes ``(N, T, d)`` -> ``logits (N, T, A)``, ``values (N, T)``."""
        features = self.trunk(obs)
        return self.policy_head(features), self.value_head(features)

    def initial_state(self, n: int) -> Any:
        """An empty memory for ``n`` new episodes."""
        return self.trunk.initial_state(n)

    def step(self, obs: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One step of ``n`` episodes: ``obs (N, d)`` -> ``logits (N, A)``, ``values (N,)``, new state."""
        features, state = self.trunk.step(obs, state)
        return self.policy_head(features), self.value_head(features), state

    def reset_state(self, state: Any, done: torch.Tensor) -> Any:
        """Forget the rows whose episode ended (``done (N,)`` true): they start afresh next step."""
        return self.trunk.reset_state(state, done)


POLICY_KINDS = ("memoryless", "stack", "gru", "gpt")


def make_policy(kind: str, obs_dim: int, n_actions: int, *, k: int = 1, hidden: int = 32, block_size: int = 64, **sizes) -> ActorCritic:
    """One of the book's policy classes on an :class:`ActorCritic`.

    ``kind``: ``"memoryless"`` (MLP on :math:`o_t`), ``"stack"`` (MLP on the last ``k``
    observations), ``"gru"`` (``hidden`` units), ``"gpt"`` (``n_embd = hidden``; ``n_layer``,
    ``n_head``, ``recency`` in ``sizes``; ``block_size`` >= the longest episode).
    """
    if kind == "memoryless":
        trunk = FrameStackTrunk(obs_dim, 1, hidden)
    elif kind == "stack":
        trunk = FrameStackTrunk(obs_dim, k, hidden)
    elif kind == "gru":
        trunk = GRUTrunk(obs_dim, hidden)
    elif kind == "gpt":
        trunk = GPTTrunk(obs_dim, n_embd=hidden, block_size=block_size, **sizes)
    else:
        raise ValueError(f"kind must be one of {POLICY_KINDS}, got {kind!r}")
    return ActorCritic(trunk, n_actions)
