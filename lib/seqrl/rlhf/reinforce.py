r"""REINFORCE on whole completions: a language model as a one-step (bandit) policy.

A completion :math:`y` of a prompt :math:`x` is one action; its log-probability is the sum of its
token log-probabilities, and the score-function identity gives the gradient of the expected reward

.. math::
    \nabla_\theta\,\mathbb E_{y\sim\pi_\theta(\cdot\mid x)}[r(x,y)]
      = \mathbb E\big[(r(x,y) - b)\,\nabla_\theta\log\pi_\theta(y\mid x)\big],
    \qquad \log\pi_\theta(y\mid x) = \sum_t \log\pi_\theta(y_t\mid x, y_{<t}),

for any baseline :math:`b` that does not depend on :math:`y`. One step of :func:`reinforce_step`
reads top to bottom:

1. **Sample** ``k`` completions for each of ``P`` prompts (:func:`~seqrl.models.sample_completions`),
   recording their token log-probabilities under the sampling distribution.
2. **Score** them with any ``reward(prompts, texts, finished) -> (B,)`` callable; optionally subtract
   :math:`\beta` times the single-sample KL estimate :math:`\log\pi_\theta(y|x) - \log\pi_{\text{ref}}(y|x)`
   (the KL-penalised reward of Ziegler et al. 2019, whose optimum is :math:`\pi^*_\beta`).
3. **Advantages** :math:`r - b` with the batch mean or the leave-one-out mean of the other
   ``k - 1`` completions of the same prompt (RLOO, Kool et al. 2019; Ahmadian et al. 2024).
4. **Re-score** the completions with :func:`~seqrl.models.logprobs` (with gradients, same
   temperature: equal to the recorded log-probabilities) and take one Adam step on
   :func:`~seqrl.rl.reinforce_loss` of the sequence log-probabilities (the gradient clipped to
   norm ``max_grad_norm``). Completions with a zero
   advantage (all ``k`` completions of their prompt earned the same reward) add nothing to the
   gradient, so only the others are re-scored.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from ..models.completions import sample_completions
from ..models.gpt import GPT
from ..models.optim import adam, gradient_step
from ..models.schedules import record_evaluation, warmup_linear_decay
from ..models.scoring import logprobs as score_logprobs
from ..rl.losses import reinforce_loss
from ..text.tokenizer import Tokenizer
from ..utils import progress

__all__ = [
    "RewardFn",
    "ReinforceConfig",
    "ReinforceHistory",
    "task_reward",
    "batch_mean_advantages",
    "leave_one_out_advantages",
    "reinforce_step",
    "train_reinforce",
]

RewardFn = Callable[[list[str], list[str], torch.Tensor], torch.Tensor]
"""``reward(prompts, texts, finished) -> (B,)`` float rewards of ``B`` completions."""


def task_reward(task) -> RewardFn:
    """The gold reward of a task with ``gold(prompt, response, finished)`` (e.g. :class:`~seqrl.text.AdditionTask`)
    as a batched :data:`RewardFn`."""

    def reward(prompts: list[str], texts: list[str], finished: torch.Tensor) -> torch.Tensor:
        return torch.tensor([task.gold(p, t, bool(f)) for p, t, f in zip(prompts, texts, finished.tolist())])

    return reward


def batch_mean_advantages(rewards: torch.Tensor) -> torch.Tensor:
    r""":math:`A_i = r_i - \bar r` with :math:`\bar r` the mean of the whole batch. ``rewards (P, k)`` -> ``(P, k)``."""
    if rewards.numel() < 2:
        raise ValueError("a batch-mean baseline needs at least two completions")
    return rewards - rewards.mean()


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    r""":math:`A_{i} = r_{i} - \frac{1}{k-1}\sum_{j\ne i} r_{j} = \frac{k}{k-1}(r_i - \bar r_x)` over
    the ``k`` completions of one prompt (row). ``rewards (P, k)`` -> ``(P, k)``; needs ``k >= 2``.

    The baseline of completion ``i`` never sees its own reward, so the gradient stays unbiased.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"leave-one-out needs rewards of shape (prompts, k >= 2), got {tuple(rewards.shape)}")
    k = rewards.shape[1]
    return k / (k - 1) * (rewards - rewards.mean(dim=1, keepdim=True))


_BASELINES = {"batch_mean": batch_mean_advantages, "leave_one_out": leave_one_out_advantages}


@dataclass
class ReinforceConfig:
    """Every knob of :func:`train_reinforce`. ``P * k`` completions per step, one Adam step each."""

    steps: int = 200
    prompts_per_step: int = 32  # P
    samples_per_prompt: int = 4  # k
    lr: float = 8e-4
    warmup_steps: int = 10  # linear learning-rate warm-up: Adam's first steps move every weight by ~lr
    anneal_lr: bool = True  # then decay linearly to 0 at the last step (as Ziegler et al. and CleanRL do)
    temperature: float = 1.0
    max_new_tokens: int = 4
    baseline: Literal["batch_mean", "leave_one_out"] = "leave_one_out"
    kl_coef: float = 0.0  # beta of the KL-penalised reward r - beta * (log pi - log pi_ref)
    track_kl: bool = True  # score the reference to log the KL even when kl_coef = 0 (False: skip that forward pass)
    max_grad_norm: float | None = 1.0
    eval_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "max_new_tokens", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ReinforceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.baseline not in _BASELINES:
            raise ValueError(f"baseline must be one of {sorted(_BASELINES)}, got {self.baseline!r}")
        if self.baseline == "leave_one_out" and self.samples_per_prompt < 2:
            raise ValueError("the leave-one-out baseline needs samples_per_prompt >= 2")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (the policy is stochastic), got {self.temperature}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.lr <= 0 or self.kl_coef < 0:
            raise ValueError(f"need lr > 0 and kl_coef >= 0, got lr={self.lr}, kl_coef={self.kl_coef}")


@dataclass
class ReinforceHistory:
    """Per step: mean reward, the sampled KL estimate and the largest gap between recorded and
    re-scored log-probabilities; every ``eval_every`` steps: whatever ``evaluate`` returned."""

    mean_reward: list[float] = field(default_factory=list)
    kl_estimate: list[float] = field(default_factory=list)  # mean over the batch of sum_t (log pi - log pi_ref); NaN if not tracked
    logprob_gap: list[float] = field(default_factory=list)  # max |recorded - re-scored| token log-prob (re-scored rows)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def reinforce_step(
    policy: GPT,
    reference: GPT,
    optimizer: torch.optim.Optimizer,
    tokenizer: Tokenizer,
    prompts: list[str],
    reward_fn: RewardFn,
    config: ReinforceConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One REINFORCE update on ``k`` completions of each prompt; returns the step's statistics."""
    k = config.samples_per_prompt
    repeated = [p for p in prompts for _ in range(k)]  # the k copies of a prompt are adjacent rows
    batch = sample_completions(policy, tokenizer, repeated, config.max_new_tokens, config.temperature, generator=generator)
    rewards = reward_fn(repeated, batch.texts, batch.finished).to(batch.logprobs)  # (B,)
    start, mask = batch.prompt_tokens.shape[1], batch.mask.to(batch.logprobs)
    with torch.no_grad():
        if config.kl_coef > 0 or config.track_kl:
            ref_lp = score_logprobs(reference, batch.sequences, batch.attention_mask, start, config.temperature)
            kl_per_sequence = ((batch.logprobs - ref_lp) * mask).sum(dim=1)  # k1: log pi(y|x) - log pi_ref(y|x)
        else:  # no penalty and no KL log: the reference's forward pass would be wasted
            kl_per_sequence = torch.full_like(rewards, float("nan"))
        shaped = rewards - config.kl_coef * kl_per_sequence if config.kl_coef > 0 else rewards
        advantages = _BASELINES[config.baseline](shaped.view(len(prompts), k)).reshape(-1)  # (B,)
        carries_gradient = advantages != 0  # e.g. a prompt whose k completions all earned the same reward
    stats = {"mean_reward": float(rewards.mean()), "kl_estimate": float(kl_per_sequence.mean()), "logprob_gap": 0.0}
    rows = carries_gradient.nonzero().squeeze(1)
    if len(rows) == 0:
        return stats  # no completion carries a learning signal: no step
    # Re-score only the rows with a non-zero advantage: the others add exactly 0 to the loss and its gradient.
    token_lp = score_logprobs(policy, batch.sequences[rows], batch.attention_mask[rows], start, config.temperature)  # (R, N)
    sequence_lp = (token_lp * mask[rows]).sum(dim=1)  # log pi(y|x) = sum_t log pi(y_t | x, y_<t)
    loss = reinforce_loss(sequence_lp, advantages[rows]) * (len(rows) / len(advantages))  # = the mean over all B rows
    gradient_step(optimizer, loss, policy.parameters(), config.max_grad_norm)
    stats["logprob_gap"] = float(((token_lp.detach() - batch.logprobs[rows]).abs() * mask[rows]).max())
    return stats


def train_reinforce(
    policy: GPT,
    tokenizer: Tokenizer,
    sample_prompts: Callable[[int, int], list[str]],
    reward_fn: RewardFn,
    config: ReinforceConfig | None = None,
    reference: GPT | None = None,
    evaluate: Callable[[GPT], dict[str, float]] | None = None,
) -> ReinforceHistory:
    """Train ``policy`` in place with :func:`reinforce_step` for ``config.steps`` steps.

    Args:
        policy: the GPT to fine-tune (trained in place).
        tokenizer: its tokenizer.
        sample_prompts: ``(n, seed) -> n prompts`` (e.g. ``AdditionTask().prompts``); step ``t``
            uses seed ``config.seed * 100_003 + t``.
        reward_fn: ``reward(prompts, texts, finished) -> (B,)``, e.g. :func:`task_reward`.
        config: hyper-parameters (default :class:`ReinforceConfig`).
        reference: :math:`\\pi_{\\text{ref}}` for the KL (default: a frozen copy of ``policy`` as it is now).
        evaluate: called on the policy before the first step, every ``eval_every`` steps and at the
            end; its dictionary of floats is recorded in ``history.evals``.
    """
    config = config if config is not None else ReinforceConfig()
    if reference is None:
        reference = copy.deepcopy(policy)
    reference.eval()  # scored under no_grad; its requires_grad flags are left as they are
    policy.train()
    optimizer = adam(policy.parameters(), config.lr)
    # Adam normalises each coordinate, so its first updates move every weight by about lr whatever the
    # gradient's size: a short linear warm-up keeps that initial random jump away from the reference small.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(config.steps, config.warmup_steps, config.anneal_lr))
    generator = torch.Generator(device=policy.device).manual_seed(config.seed)
    history = ReinforceHistory()
    started = time.perf_counter()

    def record_eval(step: int) -> None:
        record_evaluation(history, history.eval_steps, evaluate, policy, step)

    record_eval(0)
    for step in progress(range(config.steps), desc="REINFORCE"):
        prompts = sample_prompts(config.prompts_per_step, config.seed * 100_003 + step)
        stats = reinforce_step(policy, reference, optimizer, tokenizer, prompts, reward_fn, config, generator)
        schedule.step()
        history.mean_reward.append(stats["mean_reward"])
        history.kl_estimate.append(stats["kl_estimate"])
        history.logprob_gap.append(stats["logprob_gap"])
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            record_eval(step + 1)
    policy.eval()
    history.seconds = time.perf_counter() - started
    return history
