r"""PPO for language models with a KL penalty to the reference: the recipe of Ziegler et al. (2019)
(``openai/lm-human-preferences``) as catalogued by Huang et al., *The N Implementation Details of
RLHF with PPO* (2024).

One iteration of :func:`train_ppo` reads top to bottom:

1. **Rollout** (no gradients, :func:`collect_rollout`). Sample one response per prompt with
   :func:`~seqrl.models.sample_completions` at temperature :math:`\tau`; score the texts with *any*
   ``reward(prompts, texts, finished) -> (B,)`` (a learned reward model, the gold, a rule);
   subtract ``missing_eos_penalty`` from responses that never wrote ``<eos>``; score the tokens
   with the one :func:`~seqrl.models.logprobs` under the policy (:math:`\log\pi_{\text{old}}`, with its
   values :math:`V(s_t)`) and the frozen reference (:math:`\log\pi_{\text{ref}}`; skipped when
   :math:`\beta = 0` and ``track_kl=False``). These are computed once per rollout and never again
   during the epochs.
2. **Per-token reward** (:func:`~seqrl.rlhf.kl_penalised_rewards`):
   :math:`r_t = -\beta(\log\pi_{\text{old}}(y_t|s_t) - \log\pi_{\text{ref}}(y_t|s_t)) + \mathbb 1[t=T]\,r_\phi(x,y)`,
   the score on the last real token.
3. **Advantages** (:func:`gae_advantages`): GAE with :math:`\gamma = 1, \lambda = 0.95` over the
   response (:math:`V_{T+1} = 0`), returns :math:`\hat R_t = \hat A_t + V_t`, advantages whitened over
   the real tokens of the batch. Or, critic-free (``advantages="rloo"``, :func:`rloo_advantages`):
   the sequence reward :math:`R_i = r_\phi - \beta\sum_t k_1` minus the mean of the other ``k - 1``
   responses to the same prompt (Ahmadian et al. 2024), the same for every token of the response.
4. **Update** (:func:`ppo_update`): ``epochs`` passes over shuffled minibatches (with ``k`` responses
   per prompt, shuffled as whole groups of ``k``) of the clipped
   policy loss :func:`~seqrl.rl.ppo_policy_loss` plus ``vf_coef`` times the clipped value loss
   :func:`~seqrl.rl.ppo_value_loss`; Adam with eps 1e-5; gradient norm clipped. The value head
   (and a separate critic) gets its own, larger learning rate ``value_lr``: Adam moves a weight by
   about its learning rate per step, and a zero-initialised head must grow to the scale of the
   returns before its advantages mean anything; with the policy's rate it lags for dozens of
   iterations, and the advantages of near-certain tokens (the first word of every review) pick up
   a systematic sign from the whitening that can flip them.
5. **KL coefficient**: fixed, or Ziegler's adaptive controller
   (:class:`~seqrl.rlhf.kl.AdaptiveKLController`) tracking the KL to the *reference*.

The policy is a :class:`PolicyWithValueHead`: the language model plus a zero-initialised
:class:`~seqrl.models.ValueHead` on its own trunk (OpenAI's choice), or on a separate critic trunk
(Stiennon et al.; InstructGPT). Dropout is never on: the models stay in ``eval()`` mode, so the
PPO ratio is exactly 1 on the first minibatch.

The update does not need one contiguous response: :func:`ppo_update` averages its losses over the
columns its rollout's ``mask`` marks, so the same code trains whole dialogues in which the other
party's tokens sit between the agent's (:mod:`seqrl.rlhf.multiturn`).

Shapes: ``B`` responses per rollout, ``P`` prompt columns, ``N`` response tokens.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn as nn

from ..models.completions import Completions, sample_completions
from ..models.gpt import GPT
from ..models.heads import ValueHead
from ..models.optim import adam, gradient_step
from ..models.schedules import record_evaluation, warmup_linear_decay
from ..models.scoring import logprobs as score_logprobs
from ..rl.advantages import gae, masked_mean, masked_var, whiten
from ..rl.losses import ppo_policy_loss, ppo_value_loss
from ..text.tokenizer import Tokenizer
from ..utils import progress
from .kl import AdaptiveKLController, prefix_kl
from .objectives import kl_penalised_rewards
from .reinforce import RewardFn, leave_one_out_advantages

__all__ = [
    "PPOConfig",
    "PPOHistory",
    "PolicyWithValueHead",
    "Rollout",
    "collect_rollout",
    "gae_advantages",
    "rloo_advantages",
    "explained_variance",
    "last_real_column",
    "ppo_optimizer",
    "ppo_update",
    "train_ppo",
]


@dataclass
class PPOConfig:
    """Every knob of :func:`train_ppo`; defaults follow lm-human-preferences / N+ details except the
    learning rate (tiny models want ~3e-4, not 1e-5) and the batch size."""

    iterations: int = 60
    rollouts: int = 256  # B: responses per iteration
    minibatches: int = 4  # B must divide into this many minibatches
    epochs: int = 4
    lr: float = 3e-4
    value_lr: float | None = 3e-3  # the value head's (and separate critic's) learning rate; None: lr
    adam_eps: float = 1e-5
    warmup_iterations: int = 0  # linear learning-rate warm-up over this many iterations (0: none, as in the recipe)
    anneal_lr: bool = False  # decay the learning rate linearly to 0 at the last iteration
    clip: float = 0.2
    value_clip: float | None = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    temperature: float = 1.0
    max_new_tokens: int = 24
    kl_coef: float = 0.05  # beta (the initial beta when adaptive)
    kl_target: float | None = None  # None: fixed beta; a number (nats per response): Ziegler's adaptive beta
    kl_horizon: float = 10_000.0
    missing_eos_penalty: float | None = 1.0  # subtracted from the score of a response without <eos>
    whiten_advantages: bool = True
    max_grad_norm: float | None = 1.0
    # early stop of an iteration's epochs (SpinningUp, Stable-Baselines3): a minibatch whose approximate
    # KL(pi_old || pi) per token exceeds 1.5 * target_kl ends the update before its step; None: never
    target_kl: float | None = None
    advantages: Literal["gae", "rloo"] = "gae"  # "rloo": critic-free leave-one-out baseline
    samples_per_prompt: int = 1  # k responses per prompt (adjacent rows, kept together in a minibatch); "rloo" needs k >= 2
    exact_kl: bool = True  # log the exact per-prefix KL and entropy (two extra forward passes)
    track_kl: bool = True  # score the reference to log the sampled KL even when kl_coef = 0 (False: skip that forward pass)
    eval_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("iterations", "rollouts", "minibatches", "epochs", "max_new_tokens", "samples_per_prompt", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.rollouts % self.minibatches:
            raise ValueError(f"rollouts ({self.rollouts}) must be divisible by minibatches ({self.minibatches}): "
                             f"{self.rollouts} responses do not split into {self.minibatches} equal minibatches")
        if self.rollouts // self.minibatches < 2:
            raise ValueError(f"a minibatch needs at least 2 responses, got {self.rollouts} // {self.minibatches}")
        if self.rollouts % self.samples_per_prompt:
            raise ValueError(f"rollouts ({self.rollouts}) must be divisible by samples_per_prompt ({self.samples_per_prompt})")
        if self.advantages not in ("gae", "rloo"):
            raise ValueError(f"advantages must be 'gae' or 'rloo', got {self.advantages!r}")
        if self.advantages == "rloo" and self.samples_per_prompt < 2:
            raise ValueError("advantages='rloo' needs samples_per_prompt >= 2 (a leave-one-out baseline)")
        if not 0.0 < self.clip < 1.0:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")
        if self.value_clip is not None and self.value_clip <= 0:
            raise ValueError(f"value_clip must be > 0 or None, got {self.value_clip}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (the policy is stochastic), got {self.temperature}")
        if self.warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {self.warmup_iterations}")
        if self.value_lr is not None and self.value_lr < 0:
            raise ValueError(f"value_lr must be >= 0 or None, got {self.value_lr}")
        if self.lr < 0 or self.vf_coef < 0 or self.kl_coef < 0:
            raise ValueError(f"need lr, vf_coef and kl_coef >= 0, got {self.lr}, {self.vf_coef}, {self.kl_coef}")
        if self.kl_target is not None and (self.kl_target <= 0 or self.kl_coef <= 0):
            raise ValueError(f"adaptive KL needs kl_target > 0 and an initial kl_coef > 0, got {self.kl_target}, {self.kl_coef}")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl must be > 0 or None, got {self.target_kl}")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ValueError(f"missing_eos_penalty is subtracted, so it must be >= 0, got {self.missing_eos_penalty}")

    @property
    def minibatch_size(self) -> int:
        return self.rollouts // self.minibatches


class PolicyWithValueHead(nn.Module):
    r"""A language model and a value head :math:`V(s_t)` read at every response prefix.

    ``critic=None`` puts a zero-initialised :class:`~seqrl.models.ValueHead` on the policy's own
    trunk (lm-human-preferences: :math:`V \equiv 0` at the start, so the first advantages are plain
    reward-to-go and early value updates barely touch the shared weights); pass a GPT (e.g.
    :meth:`with_separate_critic`) for a separate critic trunk.
    """

    def __init__(self, lm: GPT, critic: GPT | None = None, value_init: str = "zero") -> None:
        super().__init__()
        self.lm = lm
        self.critic = critic
        width = (lm if critic is None else critic).config.n_embd
        self.value_head = ValueHead(width, init=value_init).to(lm.device)

    @classmethod
    def with_separate_critic(cls, lm: GPT, critic_init: GPT | None = None) -> "PolicyWithValueHead":
        """A critic with its own trunk, a copy of ``critic_init`` (default: of ``lm``)."""
        return cls(lm, copy.deepcopy(critic_init if critic_init is not None else lm))

    def score(self, sequences: torch.Tensor, attention_mask: torch.Tensor, response_start: int, temperature: float) -> torch.Tensor:
        """``(B, N)`` log-probabilities of the response tokens (:func:`seqrl.models.logprobs`)."""
        return score_logprobs(self.lm, sequences, attention_mask, response_start, temperature)

    def forward(
        self, sequences: torch.Tensor, attention_mask: torch.Tensor, response_start: int, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(logprobs (B, N), values (B, N))``: :math:`\log\pi(y_t|s_t)` and :math:`V(s_t)` for each response token."""
        if self.critic is None:
            token_lp, hidden = score_logprobs(self.lm, sequences, attention_mask, response_start, temperature, return_hidden=True)
        else:
            token_lp = self.score(sequences, attention_mask, response_start, temperature)
            hidden = self.critic(sequences, attention_mask=attention_mask).hidden[:, response_start - 1 : -1]
        return token_lp, self.value_head(hidden)


@dataclass
class Rollout:
    """One batch of on-policy experience, everything computed once before the PPO epochs.

    All per-token tensors are ``(B, N)`` and exactly 0 on padding (after ``<eos>``)."""

    completions: Completions
    scores: torch.Tensor  # (B,) score fed to PPO: reward_fn minus the missing-EOS penalty
    raw_scores: torch.Tensor  # (B,) reward_fn as returned
    logprobs: torch.Tensor  # log pi_old(y_t | s_t) by the scorer
    ref_logprobs: torch.Tensor  # log pi_ref(y_t | s_t)
    values: torch.Tensor  # V_old(s_t) (zeros for rloo)
    rewards: torch.Tensor  # per-token KL-penalised rewards
    kl: torch.Tensor  # per-token k1 = log pi_old - log pi_ref
    advantages: torch.Tensor
    returns: torch.Tensor  # value targets A + V (zeros for rloo)
    mask: torch.Tensor  # float response mask
    kl_coef: float

    @property
    def response_start(self) -> int:
        return self.completions.prompt_tokens.shape[1]

    @property
    def sequences(self) -> torch.Tensor:
        """``(B, P + N)`` the tokens the policy reads (prompt and response)."""
        return self.completions.sequences

    @property
    def attention_mask(self) -> torch.Tensor:
        """``(B, P + N)`` mask of real tokens in :attr:`sequences`."""
        return self.completions.attention_mask

    def __len__(self) -> int:
        return self.mask.shape[0]


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95, whiten_advantages: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""GAE over each response, :math:`\delta_t = r_t + \gamma V_{t+1} - V_t` (:math:`V_{T+1} = 0`),
    :math:`\hat A_t = \sum_l (\gamma\lambda)^l\delta_{t+l}`, returns :math:`\hat R_t = \hat A_t + V_t`
    (before whitening); then the advantages are whitened over the real tokens of the batch.

    ``rewards, values, mask (B, N)`` -> ``(advantages, returns)``, both exactly 0 on padding.
    """
    advantages, returns = gae(rewards, values, gamma, lam, mask=mask)
    if whiten_advantages:
        advantages = whiten(advantages, mask)
    return advantages, returns


def rloo_advantages(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float, samples_per_prompt: int, normalise: bool = True
) -> torch.Tensor:
    r"""Critic-free advantages (RLOO, Ahmadian et al. 2024): the sequence reward
    :math:`R_i = s_i - \beta\sum_t k_{1,t}` minus the mean of the other ``k - 1`` responses to the same
    prompt (adjacent rows), copied to every real token of the response and, if ``normalise``,
    divided by its standard deviation over the real tokens (no re-centring: the baseline stays leave-one-out).

    ``scores (B,)``, ``kl, mask (B, N)`` -> advantages ``(B, N)``, 0 on padding.
    """
    mask = mask.to(kl.dtype)
    sequence_rewards = scores.to(kl.dtype) - kl_coef * (kl * mask).sum(dim=1)  # (B,)
    per_sequence = leave_one_out_advantages(sequence_rewards.view(-1, samples_per_prompt)).reshape(-1)
    advantages = per_sequence[:, None] * mask
    if normalise:
        advantages = advantages * torch.rsqrt(masked_var(advantages, mask) + 1e-8)
    return advantages


def last_real_column(mask: torch.Tensor) -> int:
    """The last column where any row of ``mask (B, N)`` is non-zero (-1 if none). For responses that
    are one contiguous run from column 0 this is ``mask.sum(1).max() - 1``; it stays right when the
    mask has holes (a multi-turn row, where the user's tokens sit between the agent's)."""
    columns = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return int(torch.where(mask != 0, columns, -1).max()) if mask.numel() else -1


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    r""":math:`1 - \operatorname{Var}[\hat R - V]/\operatorname{Var}[\hat R]` over the real tokens: 1 for a
    perfect critic, 0 for a constant one, negative for one worse than a constant."""
    var_returns = float(masked_var(returns, mask))
    if var_returns == 0:
        return float("nan")
    return 1.0 - float(masked_var(returns - values, mask)) / var_returns


@torch.no_grad()
def collect_rollout(
    policy: PolicyWithValueHead,
    reference: GPT,
    tokenizer: Tokenizer,
    prompts: list[str],
    reward_fn: RewardFn,
    config: PPOConfig,
    kl_coef: float | None = None,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample, score and compute the per-token rewards and advantages of one batch (steps 1–3 of the
    module docstring). ``kl_coef`` overrides ``config.kl_coef`` (the adaptive controller's current value)."""
    kl_coef = config.kl_coef if kl_coef is None else kl_coef
    batch = sample_completions(policy.lm, tokenizer, prompts, config.max_new_tokens, config.temperature, generator=generator)
    device = batch.logprobs.device
    raw_scores = torch.as_tensor(reward_fn(list(prompts), batch.texts, batch.finished)).to(device=device, dtype=torch.float32)
    if raw_scores.shape != (len(prompts),):
        raise ValueError(f"reward_fn must return one score per response, shape ({len(prompts)},), got {tuple(raw_scores.shape)}")
    scores = raw_scores.clone()
    if config.missing_eos_penalty is not None:
        scores = scores - config.missing_eos_penalty * (~batch.finished).to(scores.dtype)
    sequences, attention, start = batch.sequences, batch.attention_mask, batch.prompt_tokens.shape[1]
    mask = batch.mask.to(torch.float32)
    if config.advantages == "gae":
        old_lp, values = policy(sequences, attention, start, config.temperature)
        values = values * mask
    else:
        old_lp, values = policy.score(sequences, attention, start, config.temperature), torch.zeros_like(mask)
    # No penalty and no KL to log (track_kl=False): the reference's forward pass would be wasted.
    skip_reference = kl_coef == 0 and not config.track_kl and config.kl_target is None
    ref_lp = old_lp if skip_reference else score_logprobs(reference, sequences, attention, start, config.temperature)
    old_lp, ref_lp = old_lp * mask, ref_lp * mask  # 0 on padding
    rewards, kl = kl_penalised_rewards(old_lp, ref_lp, scores, mask, kl_coef)
    if config.advantages == "gae":
        advantages, returns = gae_advantages(rewards, values, mask, config.gamma, config.lam, config.whiten_advantages)
    else:
        advantages = rloo_advantages(scores, kl, mask, kl_coef, config.samples_per_prompt, config.whiten_advantages)
        returns = torch.zeros_like(mask)
    if skip_reference:  # not measured: NaN, never a KL of 0 that was not observed
        ref_lp, kl = torch.full_like(ref_lp, float("nan")), torch.full_like(kl, float("nan"))
    return Rollout(batch, scores, raw_scores, old_lp, ref_lp, values, rewards, kl, advantages, returns, mask, float(kl_coef))


def ppo_update(
    policy: PolicyWithValueHead,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    config: PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    r"""``config.epochs`` passes over ``config.minibatches`` shuffled minibatches of the rollout
    (step 4). Returns the mean clip fraction, approximate KL, ratio, losses,
    ``first_ratio_error``: max |ratio - 1| on the first minibatch (0 up to float round-off), and
    ``minibatch_steps``: the gradient steps taken. With ``config.target_kl`` the update stops,
    before the step, at the first minibatch whose approximate KL to the rollout's policy exceeds
    :math:`1.5\,\text{target\_kl}`: the policy never moves far from the one that sampled the data.

    ``rollout`` is a :class:`Rollout` or any batch with the same fields (``sequences``,
    ``attention_mask``, ``response_start``, and per response column ``mask``, ``logprobs``,
    ``advantages``, ``values``, ``returns``). ``mask`` marks the columns the losses average over; it
    need not be one contiguous response: in a multi-turn rollout (:mod:`seqrl.rlhf.multiturn`) the
    user's tokens inside the row are 0 (observations, read but never trained on)."""
    B, start = len(rollout), rollout.response_start
    if B % config.minibatches:
        raise ValueError(f"the rollout's {B} responses do not divide into {config.minibatches} minibatches")
    size = B // config.minibatches
    sequences, attention = rollout.sequences, rollout.attention_mask
    use_critic = config.advantages == "gae"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    log: dict[str, list[float]] = {k: [] for k in ("clip_fraction", "approx_kl", "ratio_mean", "policy_loss", "value_loss", "value_clip_fraction")}
    first_ratio_error = float("nan")
    steps, too_far = 0, False
    for epoch in range(config.epochs):
        if too_far:
            break
        order = _minibatch_order(B, size, config.samples_per_prompt, generator).to(rollout.mask.device)
        for k in range(config.minibatches):
            rows = order[k * size : (k + 1) * size]
            mask = rollout.mask[rows]
            width = last_real_column(mask) + 1  # drop columns that are padding in every row of the minibatch
            seq, att, mask = sequences[rows, : start + width], attention[rows, : start + width], mask[:, :width]
            if use_critic:
                new_lp, new_values = policy(seq, att, start, config.temperature)
            else:
                new_lp = policy.score(seq, att, start, config.temperature)
            old_lp = rollout.logprobs[rows, :width]
            policy_loss, stats = ppo_policy_loss(new_lp, old_lp, rollout.advantages[rows, :width], config.clip, mask)
            loss = policy_loss
            if use_critic:
                old_values, returns = rollout.values[rows, :width], rollout.returns[rows, :width]
                value_loss = ppo_value_loss(new_values, returns, old_values, config.value_clip, mask)
                loss = loss + config.vf_coef * value_loss
                log["value_loss"].append(float(value_loss.detach()))
                if config.value_clip is not None:
                    moved = ((new_values.detach() - old_values).abs() > config.value_clip).float()
                    log["value_clip_fraction"].append(float(masked_mean(moved, mask)))
            if epoch == 0 and k == 0:
                first_ratio_error = float((((new_lp.detach() - old_lp).exp() - 1).abs() * mask).max())
            if config.target_kl is not None and stats.approx_kl > 1.5 * config.target_kl:
                too_far = True  # this minibatch's step is not taken, nor any later one of this iteration
                break
            gradient_step(optimizer, loss, params, config.max_grad_norm)
            steps += 1
            log["policy_loss"].append(float(policy_loss.detach()))
            log["clip_fraction"].append(stats.clip_fraction)
            log["approx_kl"].append(stats.approx_kl)
            log["ratio_mean"].append(stats.ratio_mean)
    out = {name: (sum(v) / len(v) if v else float("nan")) for name, v in log.items()}
    out["first_ratio_error"] = first_ratio_error
    out["minibatch_steps"] = float(steps)
    return out


def _minibatch_order(B: int, size: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """A random order of the ``B`` rows, cut into minibatches of ``size``. With ``k > 1`` responses per
    prompt (adjacent rows) the groups are shuffled whole when they fit, so a minibatch holds all ``k``
    responses of its prompts: their leave-one-out advantages sum to zero inside it, and the prompt's
    forward pass is shared (:func:`seqrl.models.logprobs`). Each minibatch is still a uniformly random
    set of groups, so its gradient is an unbiased estimate of the batch's."""
    if k > 1 and B % k == 0 and size % k == 0:
        groups = torch.randperm(B // k, generator=generator)
        return (groups[:, None] * k + torch.arange(k)).reshape(-1)
    return torch.randperm(B, generator=generator)


@dataclass
class PPOHistory:
    """Per iteration (measured on that iteration's rollout, i.e. the policy *before* its update):
    scores, KLs, entropy and PPO diagnostics; every ``eval_every`` iterations whatever ``evaluate``
    returned; a few sample texts."""

    proxy: list[float] = field(default_factory=list)  # mean reward_fn score (before the EOS penalty)
    gold: list[float] = field(default_factory=list)  # mean gold score of the rollout (if a gold was given)
    kl_sampled: list[float] = field(default_factory=list)  # mean over responses of sum_t k1
    kl_exact: list[float] = field(default_factory=list)  # mean over responses of the exact per-prefix KL
    entropy: list[float] = field(default_factory=list)  # mean over responses of sum_t H(pi(.|s_t))
    kl_coef: list[float] = field(default_factory=list)
    clip_fraction: list[float] = field(default_factory=list)
    approx_kl: list[float] = field(default_factory=list)
    minibatch_steps: list[float] = field(default_factory=list)  # gradient steps taken (fewer: stopped by target_kl)
    ratio_mean: list[float] = field(default_factory=list)
    first_ratio_error: list[float] = field(default_factory=list)
    logprob_gap: list[float] = field(default_factory=list)  # max |sampler - scorer| token log-prob
    policy_loss: list[float] = field(default_factory=list)
    value_loss: list[float] = field(default_factory=list)
    explained_variance: list[float] = field(default_factory=list)
    response_length: list[float] = field(default_factory=list)  # mean real tokens incl. <eos>
    eos_rate: list[float] = field(default_factory=list)
    eval_iterations: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[int, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def ppo_optimizer(policy: PolicyWithValueHead, config: PPOConfig) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam (:func:`seqrl.models.optim.adam`, eps ``adam_eps``) with two parameter groups, the
    language model at ``lr`` and the value head (and a separate critic) at ``value_lr``, and the
    per-iteration learning-rate schedule (linear warm-up, optional linear decay): step the schedule
    once per iteration. Shared by :func:`train_ppo` and multi-turn PPO."""
    critic = list(policy.value_head.parameters()) + ([] if policy.critic is None else list(policy.critic.parameters()))
    value_lr = config.lr if config.value_lr is None else config.value_lr
    optimizer = adam([{"params": list(policy.lm.parameters())}, {"params": critic, "lr": value_lr}], config.lr, eps=config.adam_eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear_decay(config.iterations, config.warmup_iterations, config.anneal_lr))
    return optimizer, schedule


def _check_models(policy: PolicyWithValueHead, reference: GPT) -> None:
    if policy.lm.config.vocab_size != reference.config.vocab_size:
        raise ValueError(f"policy and reference disagree on the vocabulary: {policy.lm.config.vocab_size} vs {reference.config.vocab_size}")


def train_ppo(
    policy: PolicyWithValueHead | GPT,
    tokenizer: Tokenizer,
    sample_prompts: Callable[[int, int], list[str]],
    reward_fn: RewardFn,
    config: PPOConfig | None = None,
    reference: GPT | None = None,
    gold: RewardFn | None = None,
    evaluate: Callable[[GPT], dict[str, float]] | None = None,
    n_samples: int = 3,
) -> PPOHistory:
    """Fine-tune ``policy`` in place with PPO against ``reward_fn`` under a KL penalty to ``reference``.

    Args:
        policy: a :class:`PolicyWithValueHead`, or a GPT (then wrapped with a zero-initialised value head
            on its own trunk; pass the wrapper yourself to keep the value head).
        tokenizer: the policy's tokenizer.
        sample_prompts: ``(n, seed) -> n prompts``; iteration ``i`` uses seed ``config.seed * 100_003 + i``
            (``lambda n, seed: [""] * n`` for unconditional generation). Each prompt is repeated
            ``samples_per_prompt`` times.
        reward_fn: any ``reward(prompts, texts, finished) -> (B,)``: a reward model's
            :meth:`reward_fn`, the gold, a rule.
        config: hyper-parameters (default :class:`PPOConfig`).
        reference: :math:`\\pi_{\\text{ref}}` (default: a frozen copy of the policy as it is now).
        gold: optionally the hidden true reward, applied to every rollout's texts and logged.
        evaluate: called on the language model before the first iteration, every ``eval_every``
            iterations and at the end; its floats go to ``history.evals``.
        n_samples: sample texts kept per eval iteration (``history.samples``).
    """
    config = config if config is not None else PPOConfig()
    if isinstance(policy, GPT):
        policy = PolicyWithValueHead(policy)
    if reference is None:
        reference = copy.deepcopy(policy.lm)
    _check_models(policy, reference)
    # No dropout anywhere: the first PPO ratio must be exactly 1 (N details). The models' train/eval
    # flag only switches dropout, so they stay in eval mode while training.
    policy.eval()
    reference.eval()
    optimizer, schedule = ppo_optimizer(policy, config)
    controller = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon) if config.kl_target is not None else None
    sample_generator = torch.Generator(device=policy.lm.device).manual_seed(config.seed)
    shuffle_generator = torch.Generator().manual_seed(config.seed + 1)
    history = PPOHistory()
    started = time.perf_counter()

    def record_eval(iteration: int) -> None:
        record_evaluation(history, history.eval_iterations, evaluate, policy.lm, iteration)

    record_eval(0)
    k = config.samples_per_prompt
    for iteration in progress(range(config.iterations), desc="PPO"):
        prompts = [p for p in sample_prompts(config.rollouts // k, config.seed * 100_003 + iteration) for _ in range(k)]
        kl_coef = controller.value if controller is not None else config.kl_coef
        rollout = collect_rollout(policy, reference, tokenizer, prompts, reward_fn, config, kl_coef, sample_generator)
        _log_rollout(history, policy, reference, rollout, config, gold, iteration, n_samples)
        stats = ppo_update(policy, optimizer, rollout, config, shuffle_generator)
        schedule.step()
        for name in ("clip_fraction", "approx_kl", "ratio_mean", "first_ratio_error", "policy_loss", "value_loss", "minibatch_steps"):
            getattr(history, name).append(stats[name])
        if controller is not None:
            controller.update(history.kl_sampled[-1], len(rollout))
        if (iteration + 1) % config.eval_every == 0 or iteration + 1 == config.iterations:
            record_eval(iteration + 1)
    history.seconds = time.perf_counter() - started
    return history


@torch.no_grad()
def _log_rollout(history: PPOHistory, policy, reference, rollout: Rollout, config: PPOConfig, gold, iteration: int, n_samples: int) -> None:
    batch, mask = rollout.completions, rollout.mask
    history.proxy.append(float(rollout.raw_scores.mean()))
    if gold is not None:
        history.gold.append(float(torch.as_tensor(gold(batch.prompts, batch.texts, batch.finished)).float().mean()))
    history.kl_sampled.append(float(rollout.kl.sum(dim=1).mean()))
    if config.exact_kl:
        exact = prefix_kl(policy.lm, reference, batch.sequences, batch.attention_mask, rollout.response_start, mask, config.temperature)
        history.kl_exact.append(float(exact.kl.mean()))
        history.entropy.append(float(exact.entropy.mean()))
    history.kl_coef.append(rollout.kl_coef)
    history.logprob_gap.append(float(((batch.logprobs - rollout.logprobs).abs() * mask).max()))
    history.explained_variance.append(explained_variance(rollout.values, rollout.returns, mask) if config.advantages == "gae" else float("nan"))
    history.response_length.append(float(mask.sum(dim=1).mean()))
    history.eos_rate.append(float(batch.finished.float().mean()))
    if iteration % config.eval_every == 0 or iteration + 1 == config.iterations:
        history.samples[iteration] = batch.texts[:n_samples]
