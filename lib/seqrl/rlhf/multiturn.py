r"""Multi-turn PPO: Part 2's PPO with a simulated user in the loop, the *online* baseline of Part 3.

The policy plays whole games of a dialogue task (:mod:`seqrl.games`) against the rule-based oracle
with the batched engine :func:`seqrl.games.play`, and PPO learns from them with the same pieces as
chapter 06: :class:`~seqrl.rlhf.PolicyWithValueHead`, :func:`~seqrl.rlhf.kl_penalised_rewards`,
:func:`~seqrl.rlhf.gae_advantages` (GAE + whitening), :func:`~seqrl.rlhf.ppo_update` (clipped policy
and value losses, minibatches, epochs) and :func:`~seqrl.rlhf.ppo_optimizer`. What is new is only the
layout of a rollout.

**Layout.** One game per row, right-padded, exactly as the model reads it (the layout of a logged
:class:`~seqrl.games.OfflineDataset` row)::

    <bos> <agent> is it big ? <sep> <user> no . <agent> is it a cat ? <sep> <user> correct ! <eos>

The "response" starts at column 1 (``response_start = 1``): response column :math:`j` holds token
:math:`x_{j+1}`, chosen in the history :math:`h_j = x_{\le j}`, and the value head reads
:math:`V(h_j)` there. Per response column:

* ``mask`` (the action mask): 1 on the tokens the agent sampled (its words and ``<sep>``), 0 on the
  user's reply, the ``<agent>`` prompt, ``<eos>`` and padding. Those are **observations**: the model
  reads them but the policy and value losses never average over them;
* the per-token reward :math:`r_t = r^{\text{turn}}_t - \beta\,(\log\pi_{\text{old}} - \log\pi_{\text{ref}})`,
  with the turn's reward (:math:`-1`) on each turn's last agent token and the KL penalty to the
  reference (the behaviour-cloned model) on every agent token.

**Action space.** The engine samples the agent's tokens among its words and ``<sep>`` only
(:func:`seqrl.games.agent_vocabulary`). PPO must score them under that same distribution, or the
losses push probability onto tokens the agent can never write (a sampled token's probability goes
down, the mass goes everywhere, including to ``<user>``), which the sampler never shows and the KL
estimate misreads. :class:`AgentActions` wraps the GPT so its logits carry that restriction; every
scorer of Part 2 (:func:`~seqrl.models.logprobs`, :class:`~seqrl.rlhf.PolicyWithValueHead`) then
reads the agent's distribution, and the sampler's and the scorer's log-probabilities agree.

**Advantages.** GAE runs over the agent's tokens only. For an action :math:`t` let :math:`t'` be the
next agent token: inside an utterance :math:`t' = t + 1`; after the turn's last token the next state
is the history *after the user's reply*, the state in which the agent writes its next token
(:func:`seqrl.offline.objectives.next_action_index` gives the same column). So

.. math::
    \delta_t = r_t + \gamma\,V(h_{t'-1}) - V(h_{t-1}), \qquad
    \hat A_t = \delta_t + \gamma\lambda\,\hat A_{t'}, \qquad \hat R_t = \hat A_t + V(h_{t-1}),

with :math:`V = 0` after the game's last action (every game ends inside its row: solved or out of
turns), never bootstrapped past the terminal. The implementation packs each row's action columns
to the front (:func:`pack_actions`), where "the next action" is simply the next column, runs Part
2's :func:`~seqrl.rlhf.gae_advantages` there unchanged, and scatters the result back
(:func:`unpack_actions`).

Shapes: ``B`` games per rollout, ``T`` columns of the longest game, ``N = T - 1`` response columns,
``K`` the most actions in one game.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from ..games.play import LanguageModelAgent, agent_vocabulary, play
from ..games.task import DialogueTask
from ..models.gpt import GPT, GPTOutput
from ..models.schedules import record_evaluation
from ..models.scoring import logprobs as score_logprobs
from ..utils import progress
from .kl import AdaptiveKLController
from .objectives import kl_penalised_rewards
from .ppo import PolicyWithValueHead, PPOConfig, explained_variance, gae_advantages, ppo_optimizer, ppo_update

__all__ = [
    "AgentActions",
    "dialogue_policy",
    "MultiTurnRollout",
    "MultiTurnHistory",
    "pack_actions",
    "unpack_actions",
    "multiturn_advantages",
    "collect_multiturn_rollout",
    "train_multiturn_ppo",
]


# Added to the logits of tokens the agent may not write: exp(-1e4) is 0 in float32, so the softmax is
# the sampler's (play() sets them to -inf) while the scores of observed tokens stay finite (no NaN).
_NOT_AN_ACTION = -1e4


class AgentActions(nn.Module):
    """A GPT restricted to the agent's action space: its logits plus a large negative bias on every
    token the agent may not write. It reads like a GPT (``config``, ``device``, ``forward`` returning a
    :class:`~seqrl.models.GPTOutput`) and its parameters are the GPT's, trained in place."""

    def __init__(self, lm: GPT, task: DialogueTask) -> None:
        super().__init__()
        if isinstance(lm, AgentActions):
            lm = lm.lm
        if lm.config.vocab_size != task.tokenizer().vocab_size:
            raise ValueError(f"the model's vocabulary ({lm.config.vocab_size}) is not the task's ({task.tokenizer().vocab_size})")
        self.lm = lm
        bias = torch.where(agent_vocabulary(task), 0.0, _NOT_AN_ACTION).to(lm.device)
        self.register_buffer("bias", bias, persistent=False)

    @property
    def config(self):
        return self.lm.config

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def forward(self, idx=None, past=None, attention_mask=None, inputs_embeds=None) -> GPTOutput:
        out = self.lm(idx, past=past, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        return out._replace(logits=out.logits + self.bias)


def dialogue_policy(lm: GPT, task: DialogueTask) -> PolicyWithValueHead:
    """The policy multi-turn PPO trains: ``lm`` restricted to the agent's tokens (:class:`AgentActions`)
    with a zero-initialised value head on its trunk. ``lm`` itself is trained in place."""
    return PolicyWithValueHead(AgentActions(lm, task))


def _check_action_mask(x: torch.Tensor, action_mask: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape != action_mask.shape:
        raise ValueError(f"values and action_mask must be equal (batch, time) shapes, got {tuple(x.shape)} and {tuple(action_mask.shape)}")


def _action_order(action_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per row, the column indices with the action columns first, in order; and ``K``."""
    is_action = action_mask != 0
    order = torch.argsort((~is_action).to(torch.int8), dim=1, stable=True)  # (B, T): a permutation per row
    return order, int(is_action.sum(dim=1).max()) if is_action.numel() else 0


def pack_actions(x: torch.Tensor, action_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's action columns to the front, keeping their order.

    ``x, action_mask (B, T)`` -> ``(packed (B, K), packed_mask (B, K))`` with ``packed[b, k]`` the
    ``k``-th action of row ``b`` and ``packed_mask`` 1 on real actions (rows with fewer than ``K``
    actions are right-padded with 0). In the packed row the next action is the next column.
    """
    _check_action_mask(x, action_mask)
    order, K = _action_order(action_mask)
    packed_mask = action_mask.gather(1, order[:, :K]).to(x.dtype)
    return x.gather(1, order[:, :K]) * packed_mask, packed_mask


def unpack_actions(packed: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_actions`: ``packed (B, K)`` back to the action columns of a
    ``(B, T)`` row, 0 on every other column."""
    order, K = _action_order(action_mask)
    if packed.shape != (action_mask.shape[0], K):
        raise ValueError(f"packed must be (batch, most actions in a row) = {(action_mask.shape[0], K)}, got {tuple(packed.shape)}")
    out = torch.zeros(action_mask.shape, dtype=packed.dtype, device=packed.device)
    out.scatter_(1, order[:, :K], packed)
    return out * (action_mask != 0).to(packed.dtype)


def multiturn_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    action_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_advantages: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""GAE over the agent's tokens of multi-turn rows (module docstring):
    :math:`\delta_t = r_t + \gamma V(h_{t'-1}) - V(h_{t-1})` with :math:`t'` the next agent token (across
    the user's reply), 0 after the last; then whitening over the agent tokens of the batch.

    Args:
        rewards: ``(B, N)`` per-token rewards, read on agent columns only.
        values: ``(B, N)`` :math:`V` of the state each column's token was chosen in.
        action_mask: ``(B, N)`` 1 on agent tokens.
        gamma, lam: discount and GAE parameter per agent token.
        whiten_advantages: whiten over the agent tokens of the batch (Part 2's default).

    Returns:
        ``(advantages, returns)``, both ``(B, N)`` and exactly 0 off agent columns.
    """
    _check_action_mask(rewards, action_mask)
    _check_action_mask(values, action_mask)
    packed_rewards, packed_mask = pack_actions(rewards, action_mask)
    packed_values, _ = pack_actions(values, action_mask)
    advantages, returns = gae_advantages(packed_rewards, packed_values, packed_mask, gamma, lam, whiten_advantages)
    return unpack_actions(advantages, action_mask), unpack_actions(returns, action_mask)


@dataclass
class MultiTurnRollout:
    """One batch of games, everything computed once before the PPO epochs. It has the fields
    :func:`~seqrl.rlhf.ppo_update` reads; per-column tensors are ``(B, N)`` and 0 off agent tokens."""

    tokens: torch.Tensor  # (B, T) the games, right-padded
    token_mask: torch.Tensor  # (B, T) 1 on real tokens (the attention mask)
    mask: torch.Tensor  # (B, N) float action mask over response columns 1..T-1
    turn_rewards: torch.Tensor  # (B, N) the task's reward: -1 on each turn's last agent token
    logprobs: torch.Tensor  # log pi_old by the scorer
    sampler_logprobs: torch.Tensor  # the engine's log-probability of each sampled token
    ref_logprobs: torch.Tensor  # log pi_ref
    values: torch.Tensor  # V_old of the state each action was chosen in
    rewards: torch.Tensor  # turn rewards minus beta * k1
    kl: torch.Tensor  # k1 = log pi_old - log pi_ref
    advantages: torch.Tensor
    returns: torch.Tensor  # value targets A + V
    episode_returns: torch.Tensor  # (B,) sum of the turn rewards (-turns)
    success: torch.Tensor  # (B,) bool
    invalid: torch.Tensor  # (B,) ill-formed utterances per game
    dialogues: list[str]
    kl_coef: float
    response_start: int = 1

    @property
    def sequences(self) -> torch.Tensor:
        return self.tokens

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.token_mask

    def __len__(self) -> int:
        return self.tokens.shape[0]


@torch.no_grad()
def collect_multiturn_rollout(
    policy: PolicyWithValueHead,
    reference: GPT | AgentActions,
    task: DialogueTask,
    config: PPOConfig,
    seed: int,
    kl_coef: float | None = None,
) -> MultiTurnRollout:
    """Play ``config.rollouts`` games of ``task`` with the policy (temperature ``config.temperature``;
    secrets and sampling seeded by ``seed``), score every token with the policy, its value head and the
    reference, and compute per-token rewards and advantages (module docstring). ``policy`` is a
    :func:`dialogue_policy`; ``reference`` a GPT (scored on the agent's tokens, as the policy)."""
    if not isinstance(policy.lm, AgentActions):
        raise ValueError("the policy must score the agent's tokens as the engine samples them: build it with dialogue_policy(lm, task)")
    if not isinstance(reference, AgentActions):
        reference = AgentActions(reference, task)
    kl_coef = config.kl_coef if kl_coef is None else kl_coef
    games = play(task, LanguageModelAgent(policy.lm), config.rollouts, seed=seed, temperature=config.temperature)
    if games["tokens"].shape[1] > policy.lm.config.block_size:
        raise ValueError(f"a game of {games['tokens'].shape[1]} tokens does not fit the model's block_size "
                         f"{policy.lm.config.block_size}: use a model with block_size >= task.max_tokens() plus margin")
    device = policy.lm.device
    tokens, token_mask = games["tokens"].to(device), games["mask"].to(device)
    mask = games["action_mask"][:, 1:].to(device=device, dtype=torch.float32)
    turn_rewards = games["rewards"][:, 1:].to(device)
    old_lp, values = policy(tokens, token_mask, 1, config.temperature)
    ref_lp = score_logprobs(reference, tokens, token_mask, 1, config.temperature)
    old_lp, ref_lp, values = old_lp * mask, ref_lp * mask, values * mask
    no_score = torch.zeros(len(tokens), device=device)  # the task's rewards come per turn, added below
    kl_rewards, kl = kl_penalised_rewards(old_lp, ref_lp, no_score, mask, kl_coef)
    rewards = turn_rewards + kl_rewards
    advantages, returns = multiturn_advantages(rewards, values, mask, config.gamma, config.lam, config.whiten_advantages)
    return MultiTurnRollout(
        tokens, token_mask, mask, turn_rewards, old_lp, games["logprobs"][:, 1:].to(device) * mask, ref_lp, values, rewards,
        kl, advantages, returns, games["return"], games["success"], games["invalid"], games["dialogues"], float(kl_coef))


@dataclass
class MultiTurnHistory:
    """Per iteration (measured on that iteration's games, i.e. the policy *before* its update) and,
    every ``eval_every`` iterations, whatever ``evaluate`` returned."""

    games: list[int] = field(default_factory=list)  # games played with the simulator so far, this iteration's included
    mean_return: list[float] = field(default_factory=list)
    return_se: list[float] = field(default_factory=list)  # its standard error over the iteration's games
    success: list[float] = field(default_factory=list)
    turns: list[float] = field(default_factory=list)
    invalid_rate: list[float] = field(default_factory=list)  # ill-formed utterances per turn
    kl: list[float] = field(default_factory=list)  # mean over games of sum_t k1 (to the reference)
    kl_coef: list[float] = field(default_factory=list)
    logprob_gap: list[float] = field(default_factory=list)  # max |sampler - scorer| on actions
    clip_fraction: list[float] = field(default_factory=list)
    approx_kl: list[float] = field(default_factory=list)
    first_ratio_error: list[float] = field(default_factory=list)
    policy_loss: list[float] = field(default_factory=list)
    value_loss: list[float] = field(default_factory=list)
    explained_variance: list[float] = field(default_factory=list)
    eval_iterations: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[int, list[str]] = field(default_factory=dict)
    seconds: float = 0.0


def train_multiturn_ppo(
    policy: PolicyWithValueHead | GPT,
    task: DialogueTask,
    config: PPOConfig | None = None,
    reference: GPT | None = None,
    evaluate: Callable[[GPT], dict[str, float]] | None = None,
    n_samples: int = 2,
) -> MultiTurnHistory:
    """Fine-tune ``policy`` in place with PPO on games against ``task``'s simulated user.

    Each iteration plays ``config.rollouts`` new games (seed ``config.seed * 100_003 + iteration``),
    then runs :func:`~seqrl.rlhf.ppo_update` on them. ``policy`` is a GPT (trained in place, with a new
    value head) or a :func:`dialogue_policy`. ``config`` is Part 2's :class:`PPOConfig`
    (``advantages="gae"``; the fields about single responses, ``max_new_tokens``,
    ``missing_eos_penalty``, ``samples_per_prompt`` and ``exact_kl``, are unused). ``reference`` defaults to a frozen copy of the policy as it
    is now; ``evaluate(lm)`` is called before the first iteration, every ``eval_every`` iterations and
    at the end.
    """
    config = config if config is not None else PPOConfig()
    if config.advantages != "gae":
        raise ValueError(f"multi-turn PPO uses GAE over the agent's tokens; advantages={config.advantages!r} is not supported")
    if isinstance(policy, GPT):
        policy = dialogue_policy(policy, task)
    if not isinstance(policy.lm, AgentActions):
        raise ValueError("the policy must score the agent's tokens as the engine samples them: "
                         "build it with dialogue_policy(lm, task) (or pass the GPT)")
    reference = AgentActions(copy.deepcopy(policy.lm.lm) if reference is None else reference, task)
    if reference.config.vocab_size != policy.lm.config.vocab_size:
        raise ValueError("the policy and the reference must share one vocabulary")
    policy.eval()  # no dropout: the first PPO ratio is exactly 1
    reference.eval()
    optimizer, schedule = ppo_optimizer(policy, config)
    controller = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon) if config.kl_target is not None else None
    shuffle_generator = torch.Generator().manual_seed(config.seed + 1)
    history = MultiTurnHistory()
    started = time.perf_counter()
    record_evaluation(history, history.eval_iterations, evaluate, policy.lm.lm, 0)
    for iteration in progress(range(config.iterations), desc="multi-turn PPO"):
        kl_coef = controller.value if controller is not None else config.kl_coef
        rollout = collect_multiturn_rollout(policy, reference, task, config, config.seed * 100_003 + iteration, kl_coef)
        _log_rollout(history, rollout, iteration, config, n_samples)
        stats = ppo_update(policy, optimizer, rollout, config, shuffle_generator)
        schedule.step()
        for name in ("clip_fraction", "approx_kl", "first_ratio_error", "policy_loss", "value_loss"):
            getattr(history, name).append(stats[name])
        if controller is not None:
            controller.update(history.kl[-1], len(rollout))
        if (iteration + 1) % config.eval_every == 0 or iteration + 1 == config.iterations:
            record_evaluation(history, history.eval_iterations, evaluate, policy.lm.lm, iteration + 1)
    history.seconds = time.perf_counter() - started
    return history


def _log_rollout(history: MultiTurnHistory, rollout: MultiTurnRollout, iteration: int, config: PPOConfig, n_samples: int) -> None:
    mask, turns = rollout.mask, -rollout.episode_returns
    history.games.append((history.games[-1] if history.games else 0) + len(rollout))
    history.mean_return.append(float(rollout.episode_returns.mean()))
    history.return_se.append(float(rollout.episode_returns.std() / len(rollout) ** 0.5))
    history.success.append(float(rollout.success.float().mean()))
    history.turns.append(float(turns.mean()))
    history.invalid_rate.append(float(rollout.invalid.sum() / turns.sum()))
    history.kl.append(float(rollout.kl.sum(dim=1).mean()))
    history.kl_coef.append(rollout.kl_coef)
    history.logprob_gap.append(float(((rollout.sampler_logprobs - rollout.logprobs).abs() * mask).max()))
    history.explained_variance.append(explained_variance(rollout.values, rollout.returns, mask))
    if iteration % config.eval_every == 0 or iteration + 1 == config.iterations:
        history.samples[iteration] = rollout.dialogues[:n_samples]
