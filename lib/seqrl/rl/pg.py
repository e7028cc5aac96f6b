r"""A small vectorised on-policy trainer for history policies: REINFORCE with a baseline, and PPO.

One iteration reads top to bottom (CleanRL's layout):

1. **Rollout.** :func:`collect_episodes` runs ``N`` episodes in parallel until every one has ended,
   acting with the policy's step API (the memory is carried step to step, no gradients). A row of
   the batch is one whole episode, padded after its end (``mask``).
2. **Advantages.** REINFORCE: :math:`\hat A_t = G_t - V(h_t)` with the reward-to-go :math:`G_t`
   (:func:`~seqrl.rl.discounted_returns`). PPO: GAE(:math:`\gamma, \lambda`) (:func:`~seqrl.rl.gae`).
3. **Update.** The policy re-reads each episode from its first observation (``policy(obs)``: the
   GRU from a zero state, the GPT over the whole episode), so gradients flow through the memory to
   the observation that mattered (backpropagation through time over the whole episode). Losses:
   :func:`~seqrl.rl.reinforce_loss` or :func:`~seqrl.rl.ppo_policy_loss`, plus
   :func:`~seqrl.rl.ppo_value_loss` for the baseline and an entropy bonus.

Because rows are whole episodes, nothing about recurrent states has to be stored or refreshed:
that question only appears with replay (see :mod:`seqrl.rl.drqn`). Episodes cut by ``max_steps``
are treated as ended (no bootstrap), as CleanRL does.

An environment here is batched, gymnasium-like and tensor-valued, without auto-reset:
``env.n_envs``, ``env.obs_dim``, ``env.n_actions``, ``env.max_steps``, ``reset(seed=) -> (obs, info)``,
``step(actions) -> (obs, reward, terminated, truncated, info)`` (e.g. :class:`~seqrl.pomdp.TMaze`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..models.optim import adam, gradient_step
from .advantages import gae, masked_mean, whiten
from .losses import ppo_policy_loss, ppo_value_loss, reinforce_loss
from .returns import discounted_returns

__all__ = ["EpisodeBatch", "PGConfig", "TrainingLog", "collect_episodes", "evaluate", "reinforce_update", "ppo_update", "train"]


@dataclass
class EpisodeBatch:
    """``N`` whole episodes, one per row, right-padded to the longest (``T`` steps).

    ``obs (N, T, d)`` is what the policy saw before acting at step ``t``; ``actions``, ``rewards``,
    ``logprobs`` (of the taken action when acting), ``values (N, T)``; ``mask (N, T)`` 1 for real
    steps; ``success (N,)`` from the env's ``info["success"]`` when it reports one.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    success: torch.Tensor | None = None

    @property
    def returns(self) -> torch.Tensor:
        """``(N,)`` undiscounted return of each episode."""
        return (self.rewards * self.mask).sum(dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        """``(N,)`` number of steps of each episode."""
        return self.mask.sum(dim=1)


def collect_episodes(env: Any, policy: Any, seed: int, greedy: bool = False, generator: torch.Generator | None = None) -> EpisodeBatch:
    r"""Run ``env.n_envs`` episodes to their end with ``policy``'s step API.

    Actions are sampled, :math:`a_t \sim \pi(\cdot \mid h_t)` (with ``generator`` if given), or
    :math:`\arg\max_a \pi(a \mid h_t)` with ``greedy=True``. Stops when every episode has ended.
    The rollout runs under ``torch.inference_mode`` (no graph is built); the returned tensors are
    ordinary ones, usable in the update.
    """
    with torch.inference_mode():
        batch, success = _rollout(env, policy, seed, greedy, generator)
    return EpisodeBatch(**{key: value.clone() for key, value in batch.items()}, success=success.clone())


def _rollout(env: Any, policy: Any, seed: int, greedy: bool, generator: torch.Generator | None):
    """The acting loop of :func:`collect_episodes`: per-step tensors stacked along time, and success flags."""
    obs, _ = env.reset(seed=seed)
    n, device = env.n_envs, obs.device
    state = policy.initial_state(n)
    active = torch.ones(n, dtype=torch.bool, device=device)
    success = torch.zeros(n, dtype=torch.bool, device=device)
    saved: dict[str, list[torch.Tensor]] = {key: [] for key in ("obs", "actions", "rewards", "logprobs", "values", "mask")}
    for _ in range(env.max_steps):
        logits, values, state = policy.step(obs, state)
        logp_all = F.log_softmax(logits.float(), dim=-1)
        if greedy:
            actions = logp_all.argmax(dim=-1)
        else:
            actions = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        for key, value in (("obs", obs), ("actions", actions), ("rewards", rewards * active), ("values", values),
                           ("logprobs", logp_all.gather(-1, actions[:, None]).squeeze(-1)), ("mask", active.float())):
            saved[key].append(value)
        if "success" in info:
            success |= info["success"] & active
        active = active & ~(terminated | truncated)
        obs = next_obs
        if not bool(active.any()):
            break
    return {key: torch.stack(values, dim=1) for key, values in saved.items()}, success  # each (N, T[, d])


def evaluate(env: Any, policy: Any, seed: int = 10_000, greedy: bool = False) -> dict[str, float]:
    """Success rate, mean return and mean length over one batch of ``env.n_envs`` episodes.

    By default the policy acts as it was trained, sampling its actions: in a POMDP the best policy
    without memory can be stochastic (chapter 02), so its argmax may be worse than itself.
    ``greedy=True`` evaluates the argmax instead.
    """
    batch = collect_episodes(env, policy, seed, greedy=greedy)
    return {
        "success": float(batch.success.float().mean()),
        "return": float(batch.returns.mean()),
        "length": float(batch.lengths.mean()),
    }


@dataclass
class PGConfig:
    """Hyper-parameters of :func:`train` (the defaults are the T-maze's; see chapter 03 for CartPole's)."""

    iterations: int = 60
    lr: float = 1e-2
    gamma: float = 0.99
    lam: float = 0.95  # GAE's lambda (PPO only)
    epochs: int = 2  # PPO passes over each batch
    minibatches: int = 1  # PPO minibatches per pass (split by episodes)
    clip: float = 0.2  # PPO's epsilon
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 1.0
    reward_scale: float = 1.0  # rewards are multiplied by this before advantages: keeps value targets O(1)
    stop_at_success: float | None = None  # stop early once `stop_after` batches in a row reach this success rate
    stop_after: int = 3


@dataclass
class TrainingLog:
    """Per-iteration metrics of :func:`train` (lists of floats) and the time spent."""

    success: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _score(policy: Any, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities of the taken actions, values and entropies, all ``(N, T)``, with gradients."""
    logits, values = policy(batch.obs)
    logp_all = F.log_softmax(logits, dim=-1)
    logprobs = logp_all.gather(-1, batch.actions[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(dim=-1)
    return logprobs, values, entropy


def reinforce_update(policy: Any, optimizer: torch.optim.Optimizer, batch: EpisodeBatch, config: PGConfig) -> None:
    r"""One REINFORCE step with a learned baseline:
    :math:`\mathcal L = -\overline{\log\pi(a_t|h_t)(G_t - V(h_t))} + c_V \tfrac12\overline{(V(h_t) - G_t)^2} - c_H \bar{\mathcal H}`.
    """
    returns = discounted_returns(config.reward_scale * batch.rewards, config.gamma) * batch.mask  # (N, T)
    logprobs, values, entropy = _score(policy, batch)
    advantages = whiten(returns - values.detach(), batch.mask)
    loss = (reinforce_loss(logprobs, advantages, batch.mask)
            + config.value_coef * ppo_value_loss(values, returns, mask=batch.mask)
            - config.entropy_coef * masked_mean(entropy, batch.mask))
    gradient_step(optimizer, loss, policy.parameters(), config.max_grad_norm)


def ppo_update(policy: Any, optimizer: torch.optim.Optimizer, batch: EpisodeBatch, config: PGConfig) -> None:
    r"""PPO's update: GAE advantages, then ``epochs`` passes of clipped-surrogate steps over
    minibatches of whole episodes (a recurrent policy needs each episode from its start)."""
    rewards = config.reward_scale * batch.rewards
    advantages, returns = gae(rewards, batch.values, config.gamma, config.lam, mask=batch.mask)  # (N, T)
    n = batch.obs.shape[0]
    size = max(1, n // config.minibatches)
    for _ in range(config.epochs):
        for rows in torch.randperm(n, device=batch.obs.device).split(size):
            mask = batch.mask[rows]
            minibatch = EpisodeBatch(batch.obs[rows], batch.actions[rows], batch.rewards[rows], batch.logprobs[rows],
                                     batch.values[rows], mask)
            logprobs, values, entropy = _score(policy, minibatch)
            policy_loss, _ = ppo_policy_loss(logprobs, minibatch.logprobs, whiten(advantages[rows], mask), config.clip, mask)
            loss = (policy_loss
                    + config.value_coef * ppo_value_loss(values, returns[rows], mask=mask)
                    - config.entropy_coef * masked_mean(entropy, mask))
            gradient_step(optimizer, loss, policy.parameters(), config.max_grad_norm)


def train(
    policy: Any,
    env: Any,
    config: PGConfig | None = None,
    update: Callable[[Any, torch.optim.Optimizer, EpisodeBatch, PGConfig], None] = ppo_update,
    seed: int = 0,
) -> TrainingLog:
    """Train ``policy`` on ``env`` for ``config.iterations`` batches of ``env.n_envs`` episodes
    (fewer if ``config.stop_at_success`` is reached: the training budget of a sweep goes where it is needed).

    ``update`` is :func:`ppo_update` (default) or :func:`reinforce_update`. Deterministic given
    ``seed`` (episodes, action sampling and minibatch order are all seeded).
    """
    config = config or PGConfig()
    torch.manual_seed(seed)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    optimizer = adam(policy.parameters(), config.lr)
    log, start = TrainingLog(), time.perf_counter()
    for iteration in range(config.iterations):
        batch = collect_episodes(env, policy, seed=seed * 100_003 + iteration, generator=generator)
        log.success.append(float(batch.success.float().mean()))
        log.returns.append(float(batch.returns.mean()))
        log.lengths.append(float(batch.lengths.mean()))
        recent = log.success[-config.stop_after:]
        if config.stop_at_success is not None and len(recent) == config.stop_after and min(recent) >= config.stop_at_success:
            break  # solved: the last batches were played by the current policy, no update needed
        update(policy, optimizer, batch, config)
    log.seconds = time.perf_counter() - start
    return log
