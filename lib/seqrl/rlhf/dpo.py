r"""Direct Preference Optimisation (Rafailov et al. 2023): RLHF's KL-regularised objective solved
offline, from the preference pairs alone, with no reward model and no sampling.

The optimum of :math:`\max_\pi \mathbb E_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{\text{ref}})` is
:math:`\pi^*_\beta \propto \pi_{\text{ref}}\,e^{r/\beta}`; solved for the reward,
:math:`r(x,y) = \beta\log\frac{\pi^*_\beta(y|x)}{\pi_{\text{ref}}(y|x)} + \beta\log Z_\beta(x)`. Under
Bradley–Terry only reward *differences* matter, so :math:`\log Z_\beta(x)` cancels and the
likelihood of the preferences becomes a loss on the policy itself, with the **implicit reward**
:math:`\hat r_\theta(x,y) = \beta\log\frac{\pi_\theta(y|x)}{\pi_{\text{ref}}(y|x)}`:

.. math::
    \mathcal L_{\text{DPO}}(\theta) = -\mathbb E_{(x, y_w, y_l)}
        \log\sigma\big(\hat r_\theta(x, y_w) - \hat r_\theta(x, y_l)\big)

(:func:`~seqrl.rlhf.dpo_loss`). If the labels were drawn from Bradley–Terry with a reward :math:`r`,
the loss is minimised by :math:`\pi^*_\beta` for that :math:`r` (wherever the pairs cover the responses).

Sequence log-probabilities are sums of token log-probabilities from the one scorer
:func:`seqrl.models.logprobs` (temperature 1); the reference's are computed once, before training.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..models.completions import Completions
from ..models.gpt import GPT
from ..models.optim import adam, gradient_step
from ..models.schedules import record_evaluation, warmup_linear_decay
from ..models.scoring import logprobs as score_logprobs
from ..text.tokenizer import Tokenizer
from ..utils import evaluating, progress
from .objectives import dpo_loss

__all__ = ["DPOHistory", "sequence_logprobs", "implicit_rewards", "implicit_reward_accuracy", "train_dpo"]

_CHUNK = 1024  # rows per forward pass when scoring without gradients


def sequence_logprobs(model: GPT, batch: Completions, rows: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\log\pi(y|x) = \sum_t \log\pi(y_t|x, y_{<t})` of the responses in ``batch`` (at ``rows``), ``(B,)``.

    Gradients flow if they are enabled; the response columns that are padding in every selected
    row are dropped first (causal attention: the real tokens' scores do not change).
    """
    sequences, attention, mask = batch.sequences, batch.attention_mask, batch.mask
    if rows is not None:
        sequences, attention, mask = sequences[rows], attention[rows], mask[rows]
    start = batch.prompt_tokens.shape[1]
    width = int(mask.sum(dim=1).max())
    token_lp = score_logprobs(model, sequences[:, : start + width], attention[:, : start + width], start)
    return (token_lp * mask[:, :width].to(token_lp.dtype)).sum(dim=1)


@torch.no_grad()
def _all_sequence_logprobs(model: GPT, batch: Completions) -> torch.Tensor:
    n = batch.tokens.shape[0]
    with evaluating(model):
        return torch.cat([sequence_logprobs(model, batch, torch.arange(i, min(i + _CHUNK, n), device=batch.tokens.device))
                          for i in range(0, n, _CHUNK)])


@torch.no_grad()
def implicit_rewards(policy: GPT, reference: GPT, pairs, tokenizer: Tokenizer, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(chosen, rejected)`` implicit rewards :math:`\beta\log\frac{\pi_\theta(y|x)}{\pi_{\text{ref}}(y|x)}`, each ``(B,)``."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen, rejected = pairs.encode(tokenizer, policy.device)
    return (beta * (_all_sequence_logprobs(policy, chosen) - _all_sequence_logprobs(reference, chosen)),
            beta * (_all_sequence_logprobs(policy, rejected) - _all_sequence_logprobs(reference, rejected)))


def implicit_reward_accuracy(policy: GPT, reference: GPT, pairs, tokenizer: Tokenizer, beta: float = 1.0) -> float:
    r"""Fraction of pairs whose chosen response has the larger implicit reward (ties count one half).
    For the reference itself every implicit reward is 0, so the accuracy is exactly 0.5."""
    chosen, rejected = implicit_rewards(policy, reference, pairs, tokenizer, beta)
    return float(((chosen > rejected).double() + 0.5 * (chosen == rejected).double()).mean())


@dataclass
class DPOHistory:
    """Per step: DPO loss, the share of pairs ranked right by the implicit reward, the mean chosen and
    rejected implicit rewards; every ``eval_every`` steps whatever ``evaluate`` returned."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    chosen_reward: list[float] = field(default_factory=list)
    rejected_reward: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def train_dpo(
    policy: GPT,
    reference: GPT | None,
    pairs,
    tokenizer: Tokenizer,
    beta: float = 0.1,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    *,
    warmup_steps: int = 10,
    anneal_lr: bool = True,
    max_grad_norm: float | None = 1.0,
    evaluate: Callable[[GPT], dict[str, float]] | None = None,
    eval_every: int = 10,
) -> DPOHistory:
    r"""Fine-tune ``policy`` in place with the DPO loss on ``pairs``.

    Args:
        policy: the GPT to train (usually a copy of the reference).
        reference: :math:`\pi_{\text{ref}}` (``None``: a frozen copy of ``policy`` as it is now). Its
            sequence log-probabilities are computed once, before the first step.
        pairs: a :class:`~seqrl.rlhf.preferences.PreferencePairs` (anything with ``len`` and
            ``encode(tokenizer, device) -> (chosen, rejected)`` :class:`~seqrl.models.Completions`).
        tokenizer: the policy's tokenizer.
        beta: :math:`\beta > 0`, the strength of the implicit KL regularisation.
        epochs: passes over the pairs, shuffled each time (the last minibatch may be smaller).
        lr: Adam's learning rate, warmed up linearly over ``warmup_steps`` (Adam's first steps move
            every weight by about ``lr`` whatever the gradient, enough to wreck a tiny model) and
            decayed linearly to 0 over all steps if ``anneal_lr``.
        batch_size: pairs per step, ``1 <= batch_size <= len(pairs)``.
        seed: the shuffling order.
        max_grad_norm: gradient-norm clip (``None``: none).
        evaluate: called on the policy before the first step, every ``eval_every`` steps and at the end.

    Returns:
        :class:`DPOHistory`.
    """
    n = len(pairs)
    if n == 0:
        raise ValueError("DPO needs at least one preference pair")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an int in [1, {n}] (the number of pairs), got {batch_size!r}")
    if lr < 0 or warmup_steps < 0:
        raise ValueError(f"lr and warmup_steps must be >= 0, got {lr}, {warmup_steps}")
    if reference is None:
        reference = copy.deepcopy(policy)
    reference.eval()
    policy.eval()  # no dropout: the implicit reward of the reference-equal policy is exactly 0
    chosen, rejected = pairs.encode(tokenizer, policy.device)
    ref_chosen, ref_rejected = _all_sequence_logprobs(reference, chosen), _all_sequence_logprobs(reference, rejected)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    optimizer = adam(policy.parameters(), lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total, warmup_steps, anneal_lr))
    shuffle = torch.Generator().manual_seed(seed)
    history = DPOHistory()
    started = time.perf_counter()

    def record_eval(step: int) -> None:
        record_evaluation(history, history.eval_steps, evaluate, policy, step)

    record_eval(0)
    for _ in progress(range(epochs), desc="DPO"):
        order = torch.randperm(n, generator=shuffle).to(policy.device)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            loss, chosen_rewards, rejected_rewards = dpo_loss(
                sequence_logprobs(policy, chosen, rows), sequence_logprobs(policy, rejected, rows),
                ref_chosen[rows], ref_rejected[rows], beta)
            gradient_step(optimizer, loss, policy.parameters(), max_grad_norm)
            schedule.step()
            history.loss.append(float(loss.detach()))
            history.accuracy.append(float((chosen_rewards > rejected_rewards).float().mean()))
            history.chosen_reward.append(float(chosen_rewards.mean()))
            history.rejected_reward.append(float(rejected_rewards.mean()))
            step = len(history.loss)
            if step % eval_every == 0 or step == total:
                record_eval(step)
    history.seconds = time.perf_counter() - started
    return history
