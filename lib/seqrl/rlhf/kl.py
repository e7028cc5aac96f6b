r"""KL to the reference in RLHF: the exact per-prefix KL and Ziegler's adaptive KL coefficient.

**Exact per-prefix KL.** PPO's reward uses the single-sample (k1) estimate
:math:`\sum_t \log\pi(y_t|s_t) - \log\pi_{\text{ref}}(y_t|s_t)`, unbiased but noisy. With a vocabulary
of a few dozen symbols the whole next-token distribution is cheap, so for each sampled response
one can sum the *exact* KL of every prefix it visits,

.. math::
    \mathrm{KL}_{\text{prefix}}(y) = \sum_{t=1}^{T} \sum_{v} \pi(v\mid s_t)\,
        \log\frac{\pi(v\mid s_t)}{\pi_{\text{ref}}(v\mid s_t)}, \qquad s_t = (x, y_{<t}),

whose mean over responses :math:`y \sim \pi` is an unbiased, much less noisy estimate of the
sequence-level :math:`\mathrm{KL}(\pi(\cdot|x)\,\|\,\pi_{\text{ref}}(\cdot|x))` (the chain rule of KL;
the "full" KL of TRL's ``kl_penalty``). The same pass gives the per-prefix entropy
:math:`\sum_t H(\pi(\cdot\mid s_t))`, whose collapse is the mode collapse of over-optimised policies.
Both use the distribution the sampler draws from: :math:`\operatorname{softmax}(z/\tau)`, the same
``log_softmax(logits.float() / τ)`` as :func:`seqrl.models.token_logprobs`.

**Adaptive KL coefficient** (Ziegler et al. 2019, §2.2; ``lm-human-preferences`` ``AdaptiveKLController``):

.. math::
    e_t = \operatorname{clip}\Big(\frac{\mathrm{KL}_t - \mathrm{KL}_{\text{target}}}{\mathrm{KL}_{\text{target}}}, -0.2, 0.2\Big),
    \qquad \beta_{t+1} = \beta_t\,\big(1 + e_t\, n_t / H\big),

with :math:`\mathrm{KL}_t` the batch mean of the summed k1 KL **to the reference** (not to the
previous policy), :math:`n_t` the episodes in the update and :math:`H` the horizon.

Shapes: ``B`` responses, ``N`` response tokens, ``V`` vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..models.gpt import GPT

__all__ = ["PrefixStats", "next_token_logprobs", "prefix_kl", "AdaptiveKLController"]


def next_token_logprobs(
    model: GPT, sequences: torch.Tensor, attention_mask: torch.Tensor, response_start: int, temperature: float = 1.0
) -> torch.Tensor:
    r"""The whole next-token distribution :math:`\log\operatorname{softmax}(z(s_t)/\tau)` at every response
    position: ``(B, N, V)``. Position ``t`` is the prefix :math:`s_t = (x, y_{<t})` that predicts response
    token ``t`` (the same slice :func:`seqrl.models.logprobs` gathers from)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if sequences.shape != attention_mask.shape:
        raise ValueError(f"sequences {tuple(sequences.shape)} and attention_mask {tuple(attention_mask.shape)} differ")
    if not 1 <= response_start < sequences.shape[1]:
        raise ValueError(f"response_start must be in [1, {sequences.shape[1]}), got {response_start}")
    logits = model(sequences, attention_mask=attention_mask).logits[:, response_start - 1 : -1]
    return F.log_softmax(logits.float() / temperature, dim=-1)


class PrefixStats(NamedTuple):
    """Per response ``(B,)``: exact KL and entropy summed over the prefixes it visits."""

    kl: torch.Tensor
    entropy: torch.Tensor


@torch.no_grad()
def prefix_kl(
    policy: GPT,
    reference: GPT,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: int,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> PrefixStats:
    r"""Exact per-prefix :math:`\sum_t \mathrm{KL}(\pi(\cdot|s_t)\,\|\,\pi_{\text{ref}}(\cdot|s_t))` and
    :math:`\sum_t H(\pi(\cdot|s_t))` for each response, summed over real response positions.

    Args:
        policy, reference: the two GPTs (same tokenizer).
        sequences, attention_mask: ``(B, P + N)`` as in :class:`~seqrl.models.Completions`.
        response_start: ``P``.
        mask: ``(B, N)`` response mask (1 up to and including ``<eos>``).
        temperature: the sampling temperature :math:`\tau`.

    Returns:
        :class:`PrefixStats` ``(kl (B,), entropy (B,))``; the mean of ``kl`` over responses sampled
        from ``policy`` estimates :math:`\mathrm{KL}(\pi\,\|\,\pi_{\text{ref}})` over whole responses.
    """
    if mask.shape != (sequences.shape[0], sequences.shape[1] - response_start):
        raise ValueError(f"mask must have shape {(sequences.shape[0], sequences.shape[1] - response_start)}, got {tuple(mask.shape)}")
    logp = next_token_logprobs(policy, sequences, attention_mask, response_start, temperature)  # (B, N, V)
    logq = next_token_logprobs(reference, sequences, attention_mask, response_start, temperature)
    p = logp.exp()
    m = mask.to(p.dtype)
    kl = ((p * (logp - logq)).sum(dim=-1) * m).sum(dim=1)  # (B,)
    entropy = (-(p * logp).sum(dim=-1) * m).sum(dim=1)
    return PrefixStats(kl, entropy)


@dataclass
class AdaptiveKLController:
    r"""Ziegler et al.'s proportional controller for :math:`\beta`, driving the KL to the reference
    towards ``target`` (nats per response): :math:`\beta \leftarrow \beta(1 + \operatorname{clip}(\mathrm{KL}/\mathrm{target} - 1, \pm0.2)\,n/H)`."""

    value: float
    target: float
    horizon: float

    def __post_init__(self) -> None:
        if self.value <= 0 or self.target <= 0 or self.horizon <= 0:
            raise ValueError(f"the adaptive KL controller needs value, target and horizon > 0, got {self.value}, {self.target}, {self.horizon}")

    def update(self, kl: float, n_steps: int) -> float:
        """Update with the batch's mean summed KL ``kl`` measured on ``n_steps`` episodes; returns the new :math:`\\beta`."""
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
