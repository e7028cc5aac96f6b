"""REINFORCE on whole completions: baselines by hand, on-policy bookkeeping, and learning on addition
checked with the exact oracle."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from seqrl.rlhf import (
    AdditionOracle,
    ReinforceConfig,
    answer_logprobs,
    batch_mean_advantages,
    expected_reward,
    kl_divergence,
    kl_optimal_policy,
    leave_one_out_advantages,
    reinforce_step,
    task_reward,
    train_reinforce,
    with_leftover,
)
from seqrl.text import AdditionTask



def fixed_prompts(prompts: list[str]):
    """A prompt sampler drawing from a fixed list: the bandit problem of exactly those prompts."""

    def sample(n: int, seed: int) -> list[str]:
        return [prompts[i] for i in np.random.default_rng(seed).integers(0, len(prompts), n)]

    return sample


def test_leave_one_out_baseline_excludes_each_completions_own_reward():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    advantages = leave_one_out_advantages(rewards)
    expected = torch.tensor([[1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(advantages, expected)
    with pytest.raises(ValueError, match="k >= 2"):
        leave_one_out_advantages(torch.ones(3, 1))


def test_batch_mean_baseline_centres_the_whole_batch():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert torch.allclose(batch_mean_advantages(rewards), rewards - 1.0)


def test_config_rejects_a_leave_one_out_baseline_with_one_sample():
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        ReinforceConfig(samples_per_prompt=1)
    with pytest.raises(ValueError, match="baseline must be one of"):
        ReinforceConfig(baseline="value_head")


def test_first_step_rescores_the_sampled_logprobs_and_estimates_zero_kl(tiny_addition):
    model, tokenizer = tiny_addition
    policy, reference = copy.deepcopy(model), copy.deepcopy(model)
    task = AdditionTask()
    config = ReinforceConfig(prompts_per_step=8, samples_per_prompt=4, lr=1e-3)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    stats = reinforce_step(policy, reference, optimizer, tokenizer, task.prompts(8, seed=1), task_reward(task), config,
                           torch.Generator().manual_seed(0))
    assert stats["logprob_gap"] < 1e-5, "the sampler and the scorer use the same distribution"
    assert stats["kl_estimate"] == pytest.approx(0.0, abs=1e-5), "policy = reference before the update"
    changed = any(not torch.equal(a, b) for a, b in zip(policy.parameters(), reference.parameters()))
    assert changed and -1.0 <= stats["mean_reward"] <= 1.0


class _NeverCalled(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("the reference was scored")


def test_without_a_penalty_or_a_kl_log_the_reference_is_never_scored_and_the_update_is_the_same(tiny_addition):
    model, tokenizer = tiny_addition
    task = AdditionTask()
    updated = []
    for track_kl, reference in ((True, copy.deepcopy(model)), (False, _NeverCalled())):
        policy = copy.deepcopy(model)
        config = ReinforceConfig(prompts_per_step=8, samples_per_prompt=4, lr=1e-3, kl_coef=0.0, track_kl=track_kl)
        stats = reinforce_step(policy, reference, torch.optim.Adam(policy.parameters(), lr=config.lr), tokenizer,
                               task.prompts(8, seed=1), task_reward(task), config, torch.Generator().manual_seed(0))
        updated.append(torch.cat([p.detach().flatten() for p in policy.parameters()]))
    assert np.isnan(stats["kl_estimate"]), "an untracked KL is reported as NaN, not as a number"
    assert torch.equal(updated[0], updated[1]), "with kl_coef = 0 the reference changes nothing in the update"


def ends_in_zero(prompts: list[str], texts: list[str], finished: torch.Tensor) -> torch.Tensor:
    """A reward the tiny model can learn in seconds: 1 for a finished 1-3 digit answer ending in 0."""
    return torch.tensor([float(f and t.isdigit() and len(t) <= 3 and t.endswith("0")) for t, f in zip(texts, finished.tolist())])


def exact_problem(model, tokenizer, prompts):
    """Complete reference log-probabilities ``(P, 1111)`` and the ``ends_in_zero`` reward of each outcome."""
    answers = AdditionTask().all_answers()
    ref = with_leftover(answer_logprobs(model, tokenizer, prompts, answers))
    rewards = torch.tensor([float(a.endswith("0")) for a in answers] + [0.0], dtype=torch.float64).expand_as(ref)
    return answers, ref, rewards


def test_reinforce_raises_the_exact_expected_reward(tiny_addition):
    model, tokenizer = tiny_addition
    prompts = AdditionTask().prompts(4, seed=123)
    answers, ref, rewards = exact_problem(model, tokenizer, prompts)
    policy = copy.deepcopy(model)
    config = ReinforceConfig(steps=40, prompts_per_step=8, samples_per_prompt=4, lr=2e-3, eval_every=20, seed=0)
    history = train_reinforce(policy, tokenizer, fixed_prompts(prompts), ends_in_zero, config, reference=model)
    after = with_leftover(answer_logprobs(policy, tokenizer, prompts, answers))
    before_reward, after_reward = float(expected_reward(ref, rewards).mean()), float(expected_reward(after, rewards).mean())
    assert after_reward > before_reward + 0.2, f"exact E[r] {before_reward:.3f} -> {after_reward:.3f}"
    assert np.mean(history.mean_reward[-10:]) > np.mean(history.mean_reward[:10]) + 0.1
    assert max(history.logprob_gap) < 1e-4, "recorded and re-scored log-probs agree at every step"
    assert float(kl_divergence(after, ref).mean()) > 0.01 and np.mean(history.kl_estimate[-10:]) > 0.01


def test_kl_penalised_reinforce_moves_towards_the_kl_optimum(tiny_addition):
    model, tokenizer = tiny_addition
    prompts = AdditionTask().prompts(4, seed=7)
    answers, ref, rewards = exact_problem(model, tokenizer, prompts)
    beta = 0.5
    optimum = kl_optimal_policy(ref, rewards, beta)
    distances = []

    def distance_to_optimum(policy) -> dict[str, float]:
        logp = with_leftover(answer_logprobs(policy, tokenizer, prompts, answers))
        distances.append(float(kl_divergence(logp, optimum).mean()))
        return {"kl_to_optimum": distances[-1]}

    policy = copy.deepcopy(model)
    config = ReinforceConfig(steps=40, prompts_per_step=8, samples_per_prompt=4, lr=2e-3, kl_coef=beta, eval_every=20)
    history = train_reinforce(policy, tokenizer, fixed_prompts(prompts), ends_in_zero, config, reference=model,
                              evaluate=distance_to_optimum)
    assert history.eval_steps == [0, 20, 40] and history.evals["kl_to_optimum"] == distances
    assert distances[-1] < 0.5 * distances[0], f"KL(pi || pi*_beta) {distances[0]:.3f} -> {distances[-1]:.3f}"


def test_oracle_reports_the_reference_without_rescoring_it_and_a_changed_policy_with(tiny_addition):
    model, tokenizer = tiny_addition
    task = AdditionTask()
    oracle = AdditionOracle(task, model, tokenizer, task.prompts(2, seed=5))
    assert torch.equal(oracle.policy_logprobs(copy.deepcopy(model)), oracle.ref_logprobs)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.lm_head.weight.mul_(1.5)
    assert oracle.report(changed)["kl_to_ref"] > 1e-4
