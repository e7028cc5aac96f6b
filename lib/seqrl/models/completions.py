"""Prompts in, completions out: the bridge between text and ``GPT.generate``.

Prompts of different lengths are left-padded (with the attention mask) so that all completions
start in the same column; a completion stops at ``<eos>`` and is padded after it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..text.batching import pad_batch, response_mask
from ..text.tokenizer import Tokenizer
from .gpt import GPT

__all__ = ["Completions", "encode_completions", "encode_prompts", "sample_completions"]


@dataclass
class Completions:
    """A batch of sampled completions and everything RL needs to score and train on them."""

    prompts: list[str]
    prompt_tokens: torch.Tensor  # (B, P) left-padded, starting with <bos>
    prompt_mask: torch.Tensor  # (B, P) 1 for real prompt tokens
    tokens: torch.Tensor  # (B, N) completion tokens; <pad> after <eos>
    logprobs: torch.Tensor  # (B, N) log pi(y_t | x, y_<t) under the sampling distribution; 0 on padding
    mask: torch.Tensor  # (B, N) 1 up to and including <eos>
    texts: list[str]  # completion text without special tokens, cut at <eos>
    finished: torch.Tensor  # (B,) bool: the completion ended with <eos>

    @property
    def sequences(self) -> torch.Tensor:
        """``(B, P + N)`` prompt and completion tokens."""
        return torch.cat([self.prompt_tokens, self.tokens], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """``(B, P + N)`` mask of real tokens in :attr:`sequences`."""
        return torch.cat([self.prompt_mask, self.mask], dim=1)


def encode_prompts(tokenizer: Tokenizer, prompts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``<bos> prompt`` for each prompt, left-padded: ``(tokens, mask)`` of shape ``(B, P)``."""
    if not prompts:
        raise ValueError("need at least one prompt")
    tokens, mask = pad_batch([tokenizer.encode(p, bos=True) for p in prompts], tokenizer.pad_id, side="left")
    return tokens.to(device), mask.to(device)


@torch.no_grad()
def sample_completions(
    model: GPT,
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Completions:
    """Sample one completion per prompt (``""`` is an unconditional prompt: just ``<bos>``)."""
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, prompts, model.device)
    out = model.generate(
        prompt_tokens,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        stop_token=tokenizer.eos_id,
        pad_token=tokenizer.pad_id,
        generator=generator,
        attention_mask=prompt_mask,
    )
    mask = response_mask(out.tokens, tokenizer.eos_id)
    finished = (out.tokens == tokenizer.eos_id).any(dim=1)
    texts = tokenizer.decode_batch(out.tokens.cpu(), stop_at_eos=True, skip_special=True)
    return Completions(list(prompts), prompt_tokens, prompt_mask, out.tokens, out.logprobs, mask, texts, finished)


def encode_completions(
    tokenizer: Tokenizer,
    prompts: list[str],
    texts: list[str],
    finished: list[bool] | torch.Tensor,
    device: torch.device | str = "cpu",
) -> Completions:
    """Turn stored ``(prompt, response text, finished)`` triples back into a :class:`Completions` batch,
    laid out exactly as :func:`sample_completions` lays out its samples: left-padded ``<bos> prompt``,
    then the response (``<eos>`` appended when ``finished``), right-padded with ``<pad>``.

    Reward models score, and DPO re-scores, preference pairs through this one encoding, so a stored
    response is read exactly as it was when sampled. ``logprobs`` is zeros (nothing was sampled).
    """
    finished = [bool(f) for f in (finished.tolist() if isinstance(finished, torch.Tensor) else finished)]
    if not (len(prompts) == len(texts) == len(finished)):
        raise ValueError(f"need one prompt, text and finished flag per response, got {len(prompts)}, {len(texts)}, {len(finished)}")
    responses = [tokenizer.encode(t, eos=f) for t, f in zip(texts, finished)]
    empty = [i for i, r in enumerate(responses) if not r]
    if empty:
        raise ValueError(f"responses {empty[:5]} are empty and unfinished: there is no token to score")
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, prompts, device)
    tokens, mask = pad_batch(responses, tokenizer.pad_id, side="right")
    tokens, mask = tokens.to(device), mask.to(device)
    return Completions(list(prompts), prompt_tokens, prompt_mask, tokens, torch.zeros(tokens.shape, device=device),
                       mask, list(texts), torch.tensor(finished, device=device))
