"""RLHF with tiny language models: a language model as a policy over completions.

* :mod:`~seqrl.rlhf.exact`: exact :math:`\\pi(y|x)` over the enumerable answers of the addition task,
  exact KL, the closed-form KL-regularised optimum :math:`\\pi^*_\\beta \\propto \\pi_{\\text{ref}} e^{r/\\beta}`.
* :mod:`~seqrl.rlhf.reinforce`: REINFORCE on whole completions with a batch-mean or leave-one-out
  baseline and an optional KL-penalised reward.
* :mod:`~seqrl.rlhf.objectives`: the Bradley–Terry loss, the KL-penalised per-token reward (score on
  the last real token), the DPO loss.
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
]
