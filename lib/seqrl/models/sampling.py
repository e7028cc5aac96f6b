"""Sampling one token from logits: the single implementation every generator in the book uses.

The sampler and the scorer must use the same distribution (RLHF pitfall: a policy whose samples
come from one distribution and whose log-probabilities come from another earns reward by driving
its KL estimate negative). So :func:`sample_from_logits` returns the log-probability of the chosen
token under exactly the distribution it was drawn from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sampling_logprobs", "sample_from_logits"]


def sampling_logprobs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    r"""Log-probabilities of the sampling distribution :math:`\log\operatorname{softmax}(z/\tau)`.

    With ``top_k`` the tokens outside the ``k`` largest logits get probability zero
    (log-probability ``-inf``) and the rest are renormalised.

    Args:
        logits: ``(..., V)`` unnormalised scores.
        temperature: :math:`\tau > 0`.
        top_k: keep only the ``k`` most likely tokens, or ``None`` for all.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for a sampling distribution, got {temperature}")
    scaled = logits.float() / temperature
    if top_k is not None:
        if not 1 <= top_k:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        k = min(int(top_k), scaled.shape[-1])
        kth = torch.topk(scaled, k, dim=-1).values[..., -1:]  # (..., 1)
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return F.log_softmax(scaled, dim=-1)


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Draw one token per row and return it with its log-probability.

    Sampling is by inversion: one uniform :math:`u \sim U(0,1)` per row from ``generator``, and the
    token is the first index whose cumulative probability exceeds :math:`u`. Drawing exactly one
    uniform per row makes the random stream independent of how the logits were computed, so a
    generator with and without a KV cache produces the same tokens from the same seed.
    ``temperature == 0`` means greedy decoding (log-probability 0 for the chosen token).

    Args:
        logits: ``(B, V)`` next-token scores.
        temperature: :math:`\tau \ge 0`.
        top_k: restrict sampling to the ``k`` largest logits.
        generator: a ``torch.Generator`` for reproducible draws, on any device: the uniforms are
            drawn where the generator lives and moved to the logits, so a CPU generator seeds a
            CUDA model's samples (with the same uniforms as on the CPU).

    Returns:
        ``tokens`` ``(B,)`` int64 and ``logprobs`` ``(B,)`` float32.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, vocab), got {tuple(logits.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        tokens = logits.argmax(dim=-1)
        return tokens, torch.zeros(tokens.shape, dtype=torch.float32, device=logits.device)
    logprobs = sampling_logprobs(logits, temperature, top_k)  # (B, V)
    cdf = logprobs.exp().cumsum(dim=-1)  # (B, V)
    draw_on = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape[0], 1, generator=generator, device=draw_on).to(logits.device)  # (B, 1)
    u = u * cdf[:, -1:]  # guard against a cdf ending a hair below 1
    tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)  # (B,)
    chosen = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, chosen
