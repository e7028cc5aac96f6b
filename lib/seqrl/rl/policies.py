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

from ..models import GPT, GPTConfig, KVCache, ValueHead
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
    """The memory of :class:`GPTTrunk`: the key/value cache and which cached positions are live.

    ``mask (N, T_cache)`` is 1 for positions of a row's current episode and 0 for positions of
    earlier episodes (or empty slots), exactly the GPT's left-padding mask: masked keys are never
    attended to and positions are counted over live entries only, so a new episode starts at
    position 0 whatever is still in the cache.
    """

    def __init__(self, n: int, past: KVCache | None = None, mask: torch.Tensor | None = None, all_live: bool = True) -> None:
        self.n, self.past, self.mask, self.all_live = n, past, mask, all_live

    @property
    def length(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]


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

    ``block_size`` must be at least the longest episode. Acting uses the key/value cache: each step
    costs one token's forward pass, and ``reset_state`` masks a finished row's cached positions out
    and compacts the cache so it never holds more than the longest live episode.
    """

    def __init__(self, obs_dim: int, n_embd: int = 32, n_layer: int = 1, n_head: int = 2, block_size: int = 64) -> None:
        super().__init__()
        self.obs_dim, self.out_dim = obs_dim, n_embd
        self.embed = nn.Linear(obs_dim, n_embd)
        # vocab_size 1: the token embedding and LM head are unused (observations come as vectors).
        self.gpt = GPT(GPTConfig(vocab_size=1, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd))
        # Sinusoidal positions (Vaswani et al. 2017) instead of random ones: nearby steps get similar
        # codes and "the step before" is a fixed linear map, so the first policy behaves sensibly at
        # steps that short early episodes never reached. They remain trainable.
        with torch.no_grad():
            self.gpt.pos_emb.weight.copy_(_sinusoids(block_size, n_embd))

    @property
    def block_size(self) -> int:
        return self.gpt.config.block_size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(N, T, d)`` episodes -> ``(N, T, C)``: one causal pass (right padding after an episode
        ends is harmless, no real step attends to a later one)."""
        _check_obs(obs, self.obs_dim, 3)
        return self.gpt(None, inputs_embeds=self.embed(obs)).hidden

    def initial_state(self, n: int) -> GPTState:
        return GPTState(n)

    def step(self, obs: torch.Tensor, state: GPTState) -> tuple[torch.Tensor, GPTState]:
        _check_obs(obs, self.obs_dim, 2)
        n = obs.shape[0]
        if state.n != n:
            raise ValueError(f"the state holds {state.n} episodes, got observations for {n}")
        if state.length + 1 > self.block_size:
            raise ValueError(f"an episode longer than block_size={self.block_size} steps: build the trunk with a larger block_size")
        live = torch.ones(n, 1, dtype=torch.long, device=obs.device)
        mask = live if state.mask is None else torch.cat([state.mask, live], dim=1)  # (N, T_cache + 1)
        # While no row has been reset every cached position is live: the plain (faster) causal path.
        attention_mask = None if state.all_live else mask
        out = self.gpt(None, past=state.past, attention_mask=attention_mask, inputs_embeds=self.embed(obs)[:, None])
        return out.hidden[:, 0], GPTState(n, out.past, mask, state.all_live)

    def reset_state(self, state: GPTState, done: torch.Tensor) -> GPTState:
        done = _check_done(done, state.n)
        if state.mask is None or not bool(done.any()):
            return state
        mask = state.mask * ~done[:, None]
        # Move each row's live entries to the right end (stable), then drop columns dead in every row.
        order = torch.sort(mask, dim=1, stable=True).indices  # (N, T_cache): dead slots first
        mask = mask.gather(1, order)
        keep = int(mask.sum(dim=1).max())
        if keep == 0:
            return GPTState(state.n)
        index = order[:, None, -keep:, None]  # (N, 1, keep, 1)
        past = [
            tuple(kv.gather(2, index.expand(-1, kv.shape[1], -1, kv.shape[3])) for kv in layer) for layer in state.past
        ]
        mask = mask[:, -keep:]
        return GPTState(state.n, past, mask, all_live=bool(mask.all()))


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
    ``n_head`` in ``sizes``; ``block_size`` >= the longest episode).
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
