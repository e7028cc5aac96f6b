"""A tiny causal transformer (GPT) with a KV cache and its hidden states exposed.

Follows nanoGPT's layout (pre-LayerNorm blocks, learned positions, tied input/output embeddings)
and adds the two things an RL book needs from a language model:

* a key/value cache, so sampling ``N`` new tokens costs ``O(N)`` forward steps of one token each
  instead of ``N`` forward passes over the whole prefix. The cache is either the list of per-layer
  ``(keys, values)`` that ``forward`` returns (grown by concatenation: simple, and gradients flow
  through it) or a :class:`StaticKVCache` allocated once at its final size and written in place
  (what ``generate`` and the history policies use: no step copies the past);
* the final hidden states, so value, reward and Q heads (:mod:`seqrl.models.heads`) can sit on the
  same trunk that writes the tokens.

Padding. ``attention_mask`` (1 for real tokens, 0 for padding) handles left-padded prompts of
different lengths: padded keys are never attended to and positions count real tokens only, so a
row's logits do not depend on how much padding precedes it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..text.batching import distinct_rows
from ..utils import evaluating
from .sampling import sample_from_logits

__all__ = ["GPTConfig", "GPT", "GPTOutput", "Generation", "KVCache", "StaticKVCache"]

# One (keys, values) pair per layer, each (B, n_head, T_cache, head_dim).
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class StaticKVCache:
    r"""A key/value cache of fixed ``capacity`` positions, allocated once and written in place.

    ``keys`` and ``values`` are ``(n_layer, B, n_head, capacity, head_dim)``; the first ``length``
    slots along the time axis hold the cached positions. Passed as ``past`` to :meth:`GPT.forward`,
    the new positions' keys and values are written into slots ``length .. length + T - 1`` and the
    attention reads views of slots ``0 .. length + T - 1``, so a step costs no copy of the past
    (the list cache concatenates, copying all ``T_past`` positions at every step: quadratic in the
    sequence length). ``forward`` returns this same object with ``length`` advanced.

    It is a cache for inference: it is updated in place, so keep it out of autograd (use it under
    ``torch.no_grad`` / ``torch.inference_mode``). It reads like a :data:`KVCache`: ``len(cache)``
    is the number of layers and ``cache[i]`` is layer ``i``'s ``(keys, values)``, each
    ``(B, n_head, length, head_dim)`` (views, not copies).
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, capacity: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        for name, value in (("n_layer", n_layer), ("batch", batch), ("n_head", n_head), ("capacity", capacity), ("head_dim", head_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"StaticKVCache {name} must be a positive int, got {value!r}")
        self.keys = torch.zeros(n_layer, batch, n_head, capacity, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.length = 0

    @classmethod
    def for_model(cls, model: nn.Module, batch: int, capacity: int | None = None) -> "StaticKVCache":
        """An empty cache for ``batch`` sequences of ``model`` (a :class:`GPT`, or a module that reads
        like one: ``config`` and the GPT's parameters); ``capacity`` defaults to its ``block_size``."""
        config, weight = model.config, next(model.parameters())
        return cls(config.n_layer, batch, config.n_head, capacity or config.block_size, config.n_embd // config.n_head,
                   device=weight.device, dtype=weight.dtype)

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def __len__(self) -> int:
        return self.keys.shape[0]

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[layer, :, :, : self.length], self.values[layer, :, :, : self.length]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the sequences ``rows`` (indices into the batch, in that order): e.g. drop the
        games that have ended, so later steps compute only the others."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.keys.device)
        keys = self.keys.new_zeros(self.keys.shape[0], len(rows), *self.keys.shape[2:])
        values = torch.zeros_like(keys)
        # only the filled slots are copied: the rest are written later (early in a sample, most of them)
        keys[:, :, :, : self.length] = self.keys[:, rows, :, : self.length]
        values[:, :, :, : self.length] = self.values[:, rows, :, : self.length]
        self.keys, self.values = keys, values

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``keys, values (B, n_head, T, head_dim)`` after the cached positions of ``layer``;
        return views of all of them, ``(B, n_head, length + T, head_dim)``. ``length`` is advanced
        by :meth:`GPT.forward` once every layer has written."""
        end = self.length + keys.shape[2]
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class _CacheSlot(NamedTuple):
    """Layer ``layer`` of a :class:`StaticKVCache`, as handed to one attention layer."""

    cache: StaticKVCache
    layer: int


@dataclass
class GPTConfig:
    """Every size of the model. ``block_size`` is the longest sequence (prompt + completion)."""

    vocab_size: int
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


class GPTOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab_size)
    hidden: torch.Tensor  # (B, T, n_embd), after the final LayerNorm: what heads read
    past: KVCache  # keys and values of every position seen so far, for the next call


class Generation(NamedTuple):
    tokens: torch.Tensor  # (B, N) new tokens; after a stop token, ``pad_token``
    logprobs: torch.Tensor  # (B, N) log-probability of each new token under the sampling distribution; 0 after stop


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | _CacheSlot | None,
        attn_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if isinstance(past, _CacheSlot):
            k, v = past.cache.write(past.layer, k, v)  # (B, nh, T_past + T, hs), views: the past is not copied
        elif past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([past[1], v], dim=2)
        dropout = self.dropout if self.training else 0.0
        if attn_mask is None:
            # No padding: plain causal attention, or (one new token with a cache) attend to everything.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=past is None and T > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return F.dropout(self.proj(y), dropout, self.training), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, past, attn_mask):
        attended, present = self.attn(self.ln_1(x), past, attn_mask)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, present


class GPT(nn.Module):
    """Causal transformer language model: ``forward`` scores tokens, ``generate`` samples them."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    # ------------------------------------------------------------------ scoring
    def forward(
        self,
        idx: torch.Tensor | None,
        past: KVCache | StaticKVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> GPTOutput:
        """Logits and hidden states of ``idx`` given an optional cache of earlier positions.

        Args:
            idx: ``(B, T)`` token ids, or ``None`` when ``inputs_embeds`` is given.
            past: the cache returned by the previous call (positions ``0 .. T_past - 1``), or a
                :class:`StaticKVCache`, which is written in place and returned (``T_past`` = its ``length``).
            attention_mask: ``(B, T_past + T)``: 1 for real tokens, 0 for padding; ``None`` = all real.
                Padding may sit anywhere, also between cached and new tokens (rows that grew by
                different numbers of tokens between calls): positions count real tokens only, so a
                cache may then hold more slots than ``block_size``, but no row more real tokens.
            inputs_embeds: ``(B, T, n_embd)`` input vectors used instead of token embeddings, so the
                same trunk can read continuous observations (a POMDP history) as well as text.

        Returns:
            :class:`GPTOutput` with ``logits (B, T, V)``, ``hidden (B, T, C)`` and the cache for
            positions ``0 .. T_past + T - 1``.
        """
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx (token ids) and inputs_embeds (input vectors)")
        # Inputs follow the model: a learner's CPU tensors work with a model on CUDA (no-op on the CPU).
        device = self.pos_emb.weight.device
        idx, inputs_embeds, attention_mask = (x.to(device) if isinstance(x, torch.Tensor) else x for x in (idx, inputs_embeds, attention_mask))
        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.n_embd:
                raise ValueError(
                    f"inputs_embeds must have shape (batch, time, {self.config.n_embd}), got {tuple(inputs_embeds.shape)}"
                )
            B, T = inputs_embeds.shape[:2]
        else:
            B, T = self._check_idx(idx)
        T_past = 0 if past is None else past[0][0].shape[2]
        if past is not None and (len(past) != self.config.n_layer or past[0][0].shape[0] != B):
            raise ValueError(
                f"past must hold {self.config.n_layer} layers of batch {B}, "
                f"got {len(past)} layers of batch {past[0][0].shape[0]}"
            )
        static = isinstance(past, StaticKVCache)
        if static and T_past + T > past.capacity:
            raise ValueError(f"sequence of {T_past + T} tokens exceeds the StaticKVCache's capacity {past.capacity}")
        if attention_mask is None and past is not None and T > 1:
            # Several new tokens after a cache need the causal mask offset by T_past.
            attention_mask = torch.ones(B, T_past + T, dtype=torch.long, device=device)
        positions, attn_mask = self._positions_and_mask(B, T, T_past, attention_mask, device)
        if T and int(positions.max()) >= self.config.block_size:
            # positions count real tokens: padding (also inside a cache) does not use up block_size
            raise ValueError(
                f"sequence of {int(positions.max()) + 1} tokens exceeds the model's block_size {self.config.block_size}"
            )
        inputs = self.tok_emb(idx) if inputs_embeds is None else inputs_embeds
        x = self.drop(inputs + self.pos_emb(positions))  # (B, T, C)
        present: KVCache = []
        for i, block in enumerate(self.blocks):
            layer_past = _CacheSlot(past, i) if static else None if past is None else past[i]
            x, kv = block(x, layer_past, attn_mask)
            present.append(kv)
        if static:
            past.length += T
            present = past
        hidden = self.ln_f(x)
        return GPTOutput(self.lm_head(hidden), hidden, present)

    def _check_idx(self, idx: torch.Tensor) -> tuple[int, int]:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a (batch, time) tensor of token ids, got {shape}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}), got range "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        return idx.shape[0], idx.shape[1]

    def _positions_and_mask(self, B, T, T_past, attention_mask, device):
        """Position ids ``(B, T)`` and a boolean attention mask ``(B, 1, T, T_past+T)`` or ``None``."""
        if attention_mask is None:
            positions = torch.arange(T_past, T_past + T, device=device).expand(B, T)
            return positions, None
        if attention_mask.shape != (B, T_past + T):
            raise ValueError(
                f"attention_mask must have shape (batch, past + new) = {(B, T_past + T)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        real = attention_mask.to(device=device, dtype=torch.bool)
        # A token's position is the number of real tokens before it, so left padding shifts nothing.
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)[:, T_past:]  # (B, T)
        query_pos = torch.arange(T_past, T_past + T, device=device)[:, None]  # (T, 1)
        key_pos = torch.arange(T_past + T, device=device)[None, :]  # (1, T_past + T)
        causal = key_pos <= query_pos  # (T, T_past + T)
        allowed = causal[None] & real[:, None, :]  # (B, T, T_past + T)
        # Every query may see itself, so a padding query has a non-empty row (no NaN); its output
        # is never read.
        allowed = allowed | (key_pos == query_pos)[None]
        return positions, allowed[:, None]  # (B, 1, T, T_past + T)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        stop_token: int | None = None,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        pad_token: int | None = None,
    ) -> Generation:
        r"""Sample ``max_new_tokens`` tokens after the prompts ``idx``.

        Each step draws :math:`y_t \sim \operatorname{softmax}(z_t/\tau)` (restricted to the
        ``top_k`` largest logits if given) with :func:`~seqrl.models.sampling.sample_from_logits`
        and records :math:`\log\pi(y_t \mid x, y_{<t})` under that same distribution.

        Args:
            idx: ``(B, T)`` prompts (left-padded when of different lengths, with ``attention_mask``).
            max_new_tokens: number of tokens to sample.
            temperature: :math:`\tau`; 0 means greedy.
            top_k: sample only among the ``k`` most likely tokens.
            use_cache: reuse keys and values of earlier positions (fast); ``False`` recomputes the
                whole prefix every step (the slow reference, same tokens).
            stop_token: a row that samples this token stops; later slots hold ``pad_token``. With the
                cache, stopped rows leave the batch: later steps compute only the running ones.
            generator: ``torch.Generator`` for reproducible sampling.
            attention_mask: ``(B, T)``, 1 for real prompt tokens, 0 for left padding.
            pad_token: filler after ``stop_token`` (default: ``stop_token``).

        Returns:
            :class:`Generation` ``(tokens (B, N), logprobs (B, N))``.
        """
        B, T = self._check_idx(idx)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        if T == 0:
            raise ValueError("generate needs a prompt of at least one token (e.g. BOS)")
        if T + max_new_tokens > self.config.block_size:
            raise ValueError(
                f"prompt ({T}) + max_new_tokens ({max_new_tokens}) exceeds block_size "
                f"{self.config.block_size}"
            )
        idx = idx.to(self.device)  # prompts follow the model (CPU prompts, CUDA model)
        pad = stop_token if pad_token is None else pad_token
        tokens = idx.new_full((B, max_new_tokens), pad if pad is not None else 0)
        logprobs = torch.zeros(B, max_new_tokens, device=idx.device)
        running = torch.ones(B, dtype=torch.bool, device=idx.device)
        mask = None if attention_mask is None else attention_mask.to(idx.device).long()

        with evaluating(self):
            seq, step_input, past = idx, idx, None
            cached_rows = torch.arange(B, device=idx.device)  # the rows still in the cache (running ones)
            for t in range(max_new_tokens):
                if use_cache and t == 0:
                    logits, past = self._prefill(idx, mask, T + max_new_tokens)
                elif use_cache:
                    logits = self(step_input, past=past, attention_mask=mask).logits[:, -1]
                    if len(cached_rows) < B:  # every row draws its uniform, so the random stream is that of B rows
                        logits = logits.new_zeros(B, logits.shape[-1]).index_copy_(0, cached_rows, logits)
                else:
                    logits = self(seq, attention_mask=mask).logits[:, -1]
                next_token, next_logprob = sample_from_logits(logits, temperature, top_k, generator)
                if stop_token is not None:
                    next_token = torch.where(running, next_token, tokens[:, t])
                    next_logprob = next_logprob * running
                tokens[:, t] = next_token
                logprobs[:, t] = next_logprob
                if stop_token is not None:
                    running &= next_token != stop_token
                    if not running.any():
                        break
                if use_cache:
                    still = running[cached_rows]
                    if not still.all():  # rows that stopped leave the cache: later steps skip them
                        keep = still.nonzero().squeeze(1)
                        past.select(keep)
                        cached_rows = cached_rows[keep]
                        mask = None if mask is None else mask[keep]
                    step_input = next_token[cached_rows, None]
                else:
                    seq = torch.cat([seq, next_token[:, None]], dim=1)
                if mask is not None:
                    mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        return Generation(tokens, logprobs)

    def _prefill(self, idx: torch.Tensor, mask: torch.Tensor | None, capacity: int) -> tuple[torch.Tensor, StaticKVCache]:
        """The next-token logits ``(B, V)`` after the prompts ``idx (B, T)`` and a :class:`StaticKVCache`
        of ``capacity`` slots holding them. One buffer for the whole sample, written in place: no step
        copies the cached past. Identical prompts (the ``k`` samples of a prompt in RLOO, GRPO or
        best-of-n) are computed once and their keys and values copied to every row that shares them."""
        first, inverse = distinct_rows(idx, mask)
        if len(first) == len(idx):
            past = StaticKVCache.for_model(self, len(idx), capacity)
            return self(idx, past=past, attention_mask=mask).logits[:, -1], past
        past = StaticKVCache.for_model(self, len(first), capacity)
        logits = self(idx[first], past=past, attention_mask=None if mask is None else mask[first]).logits[:, -1]
        past.select(inverse)  # every row gets its prompt's keys and values
        return logits[inverse], past
