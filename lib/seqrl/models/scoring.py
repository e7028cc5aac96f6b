"""Scoring tokens: the one ``logprobs`` used for rollouts, training and the reference model.

RLHF pitfall: if the sampler, the trainer and the reference compute log-probabilities differently
(another temperature, padding seen differently, dropout on), the PPO ratio is not 1 at the start and
the KL estimate is biased. Every chapter therefore scores tokens with :func:`logprobs`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .gpt import GPT

__all__ = ["logprobs", "token_logprobs"]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r""":math:`\log\operatorname{softmax}(z_t/\tau)[y_t]` for logits ``(B, N, V)`` and tokens ``(B, N)``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to score tokens, got {temperature}")
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree on (batch, time)")
    return F.log_softmax(logits.float() / temperature, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def logprobs(
    model: GPT,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    temperature: float = 1.0,
    return_hidden: bool = False,
):
    r"""Log-probabilities of the response tokens ``sequences[:, response_start:]``.

    .. math:: \log\pi_\theta(y_t \mid x, y_{<t}) = \log\operatorname{softmax}\big(z_\theta(x, y_{<t})/\tau\big)[y_t]

    Args:
        model: the policy or reference GPT.
        sequences: ``(B, P + N)`` left-padded prompts followed by responses (``Completions.sequences``).
        attention_mask: ``(B, P + N)`` mask of real tokens (``Completions.attention_mask``).
        response_start: ``P``, the column where responses start.
        temperature: the sampling temperature :math:`\tau` the responses were drawn with.
        return_hidden: also return the hidden states that predict each response token ``(B, N, C)``,
            the inputs of a value head.

    Returns:
        ``(B, N)`` log-probabilities (masked positions hold finite junk: multiply by the mask), and
        the hidden states if asked.
    """
    if sequences.shape != attention_mask.shape:
        raise ValueError(f"sequences {tuple(sequences.shape)} and attention_mask {tuple(attention_mask.shape)} differ")
    if not 1 <= response_start < sequences.shape[1]:
        raise ValueError(f"response_start must be in [1, {sequences.shape[1]}), got {response_start}")
    out = model(sequences, attention_mask=attention_mask)
    predicting = slice(response_start - 1, -1)  # position t-1 predicts token t
    scores = token_logprobs(out.logits[:, predicting], sequences[:, response_start:], temperature)
    if return_hidden:
        return scores, out.hidden[:, predicting]
    return scores
