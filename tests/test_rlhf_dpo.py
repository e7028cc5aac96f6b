"""DPO: the loss starts at log 2, the reference has zero implicit reward, and on the enumerable addition
task DPO on Bradley–Terry pairs moves the policy towards the closed-form optimum pi*_beta."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from seqrl.rlhf import answer_logprobs, kl_divergence, kl_optimal_policy, with_leftover
from seqrl.rlhf.dpo import implicit_reward_accuracy, implicit_rewards, train_dpo
from seqrl.rlhf.preferences import PreferencePairs, sample_preference_pairs
from seqrl.text import AdditionTask

TASK = AdditionTask()


def ends_in_zero(prompts: list[str], texts: list[str], finished: torch.Tensor) -> torch.Tensor:
    """A verifiable reward with plenty of signal for the tiny model: 1 for a finished number ending in 0."""
    return torch.tensor([float(f and t.isdigit() and len(t) <= 3 and t.endswith("0")) for t, f in zip(texts, finished.tolist())])


def small_pairs() -> PreferencePairs:
    return PreferencePairs(["1+2=", "3+4="], ["3", "7"], ["4", "70"], [True, True], [True, False])


def test_the_reference_has_zero_implicit_reward_and_the_first_loss_is_log_2(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    pairs = small_pairs()
    chosen, rejected = implicit_rewards(model, copy.deepcopy(model), pairs, tokenizer, beta=0.5)
    assert torch.all(chosen == 0) and torch.all(rejected == 0)
    assert implicit_reward_accuracy(model, copy.deepcopy(model), pairs, tokenizer) == 0.5, "ties count one half"
    history = train_dpo(copy.deepcopy(model), model, pairs, tokenizer, beta=0.5, epochs=1, lr=1e-3, batch_size=2)
    assert history.loss[0] == pytest.approx(math.log(2), abs=1e-6), "policy = reference: sigma(0) for every pair"


def test_dpo_validates_its_arguments(tiny_addition):
    model, tokenizer = tiny_addition
    pairs = small_pairs()
    with pytest.raises(ValueError, match="beta must be > 0"):
        train_dpo(copy.deepcopy(model), model, pairs, tokenizer, beta=0.0)
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 2\]"):
        train_dpo(copy.deepcopy(model), model, pairs, tokenizer, batch_size=3)


def test_dpo_on_bradley_terry_pairs_moves_the_policy_towards_the_kl_optimum(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    prompts, answers, beta = TASK.prompts(4, seed=7), TASK.all_answers(), 0.25
    ref = with_leftover(answer_logprobs(model, tokenizer, prompts, answers))
    rewards = torch.tensor([float(a.endswith("0")) for a in answers] + [0.0], dtype=torch.float64).expand_as(ref)
    # Labels drawn from sigma(r_a - r_b) (label temperature 1): DPO's fixed point is pi_ref * exp(r / beta) / Z = pi*_beta.
    optimum = kl_optimal_policy(ref, rewards, beta)

    def distance(policy) -> dict[str, float]:
        return {"kl_to_optimum": float(kl_divergence(with_leftover(answer_logprobs(policy, tokenizer, prompts, answers)), optimum).mean())}

    pairs = sample_preference_pairs(model, tokenizer, prompts, ends_in_zero, 1280, label_temperature=1.0, max_new_tokens=4, seed=0)
    train, held_out = pairs.split(1024)
    policy = copy.deepcopy(model)
    history = train_dpo(policy, model, train, tokenizer, beta=beta, epochs=1, lr=2e-3, batch_size=64, warmup_steps=4,
                        evaluate=distance, eval_every=8)
    distances = history.evals["kl_to_optimum"]
    assert history.eval_steps == [0, 8, 16]
    assert distances[-1] < 0.85 * distances[0], f"KL(pi || pi*_beta): {distances[0]:.3f} -> {distances[-1]:.3f}"
    chosen, rejected = implicit_rewards(policy, model, held_out, tokenizer, beta)
    margins = held_out.gold_margins(ends_in_zero)
    informative = margins != 0  # pairs of equal reward carry coin-flip labels
    agreement = float((torch.sign(chosen - rejected).double().cpu() == torch.sign(margins))[informative].double().mean())
    assert agreement > 0.6, f"the implicit reward orders held-out pairs as r does on only {agreement:.2f} of them"
