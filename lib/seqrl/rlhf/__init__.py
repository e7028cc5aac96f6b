"""RLHF with tiny language models: a language model as a policy over completions.

* :mod:`~seqrl.rlhf.exact`: exact :math:`\\pi(y|x)` over the enumerable answers of the addition task,
  exact KL, the closed-form KL-regularised optimum :math:`\\pi^*_\\beta \\propto \\pi_{\\text{ref}} e^{r/\\beta}`.
* :mod:`~seqrl.rlhf.reinforce`: REINFORCE on whole completions with a batch-mean or leave-one-out
  baseline and an optional KL-penalised reward.
* :mod:`~seqrl.rlhf.objectives`: the Bradley–Terry loss, the KL-penalised per-token reward (score on
  the last real token), the DPO loss.
* :mod:`~seqrl.rlhf.preferences`: preference pairs sampled from a policy and labelled by a hidden gold
  with Bradley–Terry noise.
* :mod:`~seqrl.rlhf.reward_model`: a GPT trunk with a scalar head at the last real token, trained on
  pairs, normalised on reference samples, usable as any other reward function.
* :mod:`~seqrl.rlhf.best_of_n`: best-of-n from pools of samples (order statistics), the analytic KL
  bound, and the exact best-of-n distribution and KL over enumerable responses.
* :mod:`~seqrl.rlhf.ppo`: PPO for sequences with a value head and a KL penalty to the reference
  (fixed or adaptive), GAE or a critic-free leave-one-out baseline.
* :mod:`~seqrl.rlhf.multiturn`: the same PPO on whole games against a simulated user (Part 3's online
  baseline): one token row per game, the user's tokens as observations, GAE across the user's turns.
* :mod:`~seqrl.rlhf.kl`: the exact per-prefix KL and entropy, Ziegler's adaptive KL controller.
* :mod:`~seqrl.rlhf.dpo`: direct preference optimisation on preference pairs.
"""
from .exact import (
    AdditionOracle,
    answer_logprobs,
    expected_reward,
    gold_rewards,
    kl_divergence,
    kl_optimal_policy,
    leftover_mass,
    log_partition,
    regularised_objective,
    with_leftover,
)
from .objectives import bradley_terry_loss, dpo_loss, kl_penalised_rewards, preference_probability
from .best_of_n import (
    BestOfNCurve,
    ResponsePools,
    best_of_n_curve,
    best_of_n_expectation,
    best_of_n_groups,
    best_of_n_kl,
    best_of_n_kl_bound,
    best_of_n_logprobs,
    fit_best_of_n_gain,
    order_statistic_weights,
    sample_pools,
)
from .preferences import PreferencePairs, bradley_terry_labels, review_gold, sample_preference_pairs
from .reward_model import RewardHistory, RewardModel, pairwise_agreement, train_reward_model
from .kl import AdaptiveKLController, PrefixStats, next_token_logprobs, prefix_kl
from .ppo import (
    PolicyWithValueHead,
    PPOConfig,
    PPOHistory,
    Rollout,
    collect_rollout,
    explained_variance,
    gae_advantages,
    last_real_column,
    ppo_optimizer,
    ppo_update,
    rloo_advantages,
    train_ppo,
)
from .multiturn import (
    AgentActions,
    MultiTurnHistory,
    MultiTurnRollout,
    collect_multiturn_rollout,
    dialogue_policy,
    multiturn_advantages,
    pack_actions,
    train_multiturn_ppo,
    unpack_actions,
)
from .dpo import DPOHistory, implicit_reward_accuracy, implicit_rewards, sequence_logprobs, train_dpo
from .reinforce import (
    ReinforceConfig,
    ReinforceHistory,
    RewardFn,
    batch_mean_advantages,
    leave_one_out_advantages,
    reinforce_step,
    task_reward,
    train_reinforce,
)

__all__ = [
    "AdaptiveKLController",
    "DPOHistory",
    "PolicyWithValueHead",
    "PPOConfig",
    "PPOHistory",
    "PrefixStats",
    "Rollout",
    "collect_rollout",
    "explained_variance",
    "gae_advantages",
    "implicit_reward_accuracy",
    "implicit_rewards",
    "last_real_column",
    "AgentActions",
    "dialogue_policy",
    "MultiTurnHistory",
    "MultiTurnRollout",
    "collect_multiturn_rollout",
    "multiturn_advantages",
    "pack_actions",
    "train_multiturn_ppo",
    "unpack_actions",
    "next_token_logprobs",
    "ppo_optimizer",
    "ppo_update",
    "prefix_kl",
    "rloo_advantages",
    "sequence_logprobs",
    "train_dpo",
    "train_ppo",
    "bradley_terry_loss",
    "dpo_loss",
    "kl_penalised_rewards",
    "preference_probability",
    "AdditionOracle",
    "ReinforceConfig",
    "ReinforceHistory",
    "RewardFn",
    "answer_logprobs",
    "batch_mean_advantages",
    "expected_reward",
    "gold_rewards",
    "kl_divergence",
    "kl_optimal_policy",
    "leave_one_out_advantages",
    "leftover_mass",
    "log_partition",
    "regularised_objective",
    "reinforce_step",
    "task_reward",
    "train_reinforce",
    "with_leftover",
    "PreferencePairs",
    "bradley_terry_labels",
    "review_gold",
    "sample_preference_pairs",
    "RewardHistory",
    "RewardModel",
    "pairwise_agreement",
    "train_reward_model",
    "BestOfNCurve",
    "ResponsePools",
    "best_of_n_curve",
    "best_of_n_expectation",
    "best_of_n_groups",
    "best_of_n_kl",
    "best_of_n_kl_bound",
    "best_of_n_logprobs",
    "fit_best_of_n_gain",
    "order_statistic_weights",
    "sample_pools",
]
