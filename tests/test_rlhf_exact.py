"""Exact enumeration on the addition task: pi(y|x) for every answer, exact KL, and the closed-form
optimum of the KL-regularised objective (its identities checked numerically)."""
from __future__ import annotations

import math

import pytest
import torch

from seqrl.models import sample_completions
from seqrl.rlhf import (
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
from seqrl.text import AdditionTask
from seqrl.viz.kl_optimum import KLOptimumExplorer, kl_optimum_sweep, optimum_view


def random_problem(seed: int = 0, prompts: int = 3, outcomes: int = 12):
    """Complete reference log-probabilities and rewards in {-1, 0, 1} with ties at the top."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.log_softmax(2.0 * torch.randn(prompts, outcomes, generator=g, dtype=torch.float64), dim=-1)
    rewards = torch.randint(-1, 2, (prompts, outcomes), generator=g).double()
    rewards[:, :2] = 1.0  # every row has at least two best outcomes
    return ref, rewards



def test_kl_optimum_tends_to_the_reference_as_beta_grows():
    ref, rewards = random_problem()
    optimum = kl_optimal_policy(ref, rewards, beta=1e6)
    assert torch.allclose(optimum.exp(), ref.exp(), atol=1e-5)
    assert float(kl_divergence(optimum, ref).max()) < 1e-10


def test_kl_optimum_tends_to_the_reference_restricted_to_the_best_answers_as_beta_vanishes():
    ref, rewards = random_problem()
    best = rewards == rewards.max(dim=-1, keepdim=True).values
    expected = torch.where(best, ref.exp(), torch.zeros_like(ref))
    expected = expected / expected.sum(dim=-1, keepdim=True)  # uniform over the best, weighted by pi_ref
    optimum = kl_optimal_policy(ref, rewards, beta=1e-3)
    assert torch.allclose(optimum.exp(), expected, atol=1e-9)


def test_kl_of_the_optimum_is_expected_reward_over_beta_minus_log_partition():
    ref, rewards = random_problem(seed=1)
    for beta in (0.05, 0.3, 1.0, 4.0):
        optimum = kl_optimal_policy(ref, rewards, beta)
        log_z = log_partition(ref, rewards, beta)
        identity = expected_reward(optimum, rewards) / beta - log_z
        assert torch.allclose(kl_divergence(optimum, ref), identity, atol=1e-10)
        assert torch.allclose(regularised_objective(optimum, ref, rewards, beta), beta * log_z, atol=1e-10)


def test_the_optimum_beats_every_perturbation_of_itself():
    ref, rewards = random_problem(seed=2)
    beta = 0.4
    optimum = kl_optimal_policy(ref, rewards, beta)
    best = regularised_objective(optimum, ref, rewards, beta)
    g = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1e-1, 1.0):
        for _ in range(20):
            noise = scale * torch.randn(optimum.shape, generator=g, dtype=torch.float64)
            perturbed = torch.log_softmax(optimum + noise, dim=-1)
            assert (regularised_objective(perturbed, ref, rewards, beta) < best).all()
    # the reference and the reward-greedy policy are perturbations too
    greedy = kl_optimal_policy(ref, rewards, 1e-4)
    assert (regularised_objective(ref, ref, rewards, beta) < best).all()
    assert (regularised_objective(greedy, ref, rewards, beta) < best).all()


def test_kl_counts_the_leftover_mass_as_one_more_outcome():
    p = torch.tensor([[0.5, 0.3]]).log()  # leftover 0.2
    q = torch.tensor([[0.25, 0.25]]).log()  # leftover 0.5
    expected = 0.5 * math.log(2) + 0.3 * math.log(1.2) + 0.2 * math.log(0.4)
    assert float(kl_divergence(p, q)) == pytest.approx(expected, abs=1e-7)
    assert float(kl_divergence(with_leftover(p), with_leftover(q))) == pytest.approx(expected, abs=1e-7)
    assert torch.allclose(leftover_mass(p), torch.tensor([0.2], dtype=torch.float64), atol=1e-7)
    assert float(kl_divergence(p, p)) == pytest.approx(0.0, abs=1e-12)
    complete32 = torch.log_softmax(torch.randn(3, 50), dim=-1)  # float32 round-off is not an extra outcome
    assert torch.isfinite(kl_divergence(complete32, complete32.double())).all()


def test_exact_functions_reject_bad_inputs():
    ref, rewards = random_problem()
    with pytest.raises(ValueError, match="beta must be a positive"):
        kl_optimal_policy(ref, rewards, 0.0)
    with pytest.raises(ValueError, match="complete distribution"):
        kl_optimal_policy(ref[:, :-1], rewards[:, :-1], 1.0)
    with pytest.raises(ValueError, match="one shape"):
        kl_divergence(ref, ref[:, :-1])


def test_gold_rewards_mark_the_sum_and_give_minus_one_to_anything_else():
    task = AdditionTask()
    answers = task.all_answers()
    rewards = gold_rewards(task, ["12+34=", "0+0="], answers)
    assert rewards.shape == (2, len(answers) + 1) and len(answers) == 1110
    assert rewards[0, answers.index("46")] == 1 and rewards[0, answers.index("046")] == 0
    assert rewards[1, answers.index("0")] == 1 and rewards[1, answers.index("00")] == 0
    assert (rewards[:, -1] == -1).all() and (rewards == 1).sum() == 2


def test_answer_logprobs_sum_to_at_most_one_and_match_the_sampler(tiny_addition):
    model, tokenizer = tiny_addition
    task = AdditionTask()
    answers = task.all_answers()
    logp = answer_logprobs(model, tokenizer, ["37+45=", "5+9="], answers)
    total = logp.exp().sum(dim=-1)
    assert logp.shape == (2, 1110) and (total <= 1 + 1e-6).all() and (total > 0.5).all()
    n = 6000
    samples = sample_completions(model, tokenizer, ["37+45="] * n, 4, generator=torch.Generator().manual_seed(0))
    index = {a: i for i, a in enumerate(answers)}
    counts = torch.zeros(len(answers) + 1, dtype=torch.float64)
    for text, finished, tokens in zip(samples.texts, samples.finished.tolist(), samples.tokens.tolist()):
        exact_tokens = tokenizer.encode(text, eos=True) == tokens[: len(text) + 1]  # no special tokens inside
        counts[index[text] if finished and exact_tokens and text in index else -1] += 1
    probs = with_leftover(logp)[0].exp()
    sigma = (probs * (1 - probs) / n).sqrt()
    assert ((counts / n - probs).abs() <= 4.5 * sigma + 2e-3).all(), "frequencies agree with pi(y|x) within sampling error"
    # Pearson's chi-square over the outcomes expected at least 10 times, the rest lumped into one bin
    common = n * probs >= 10
    observed = torch.cat([counts[common], counts[~common].sum().view(1)])
    expected = torch.cat([n * probs[common], n * probs[~common].sum().view(1)])
    chi2, dof = float(((observed - expected) ** 2 / expected).sum()), int(common.sum())
    assert dof >= 5 and chi2 < dof + 5 * math.sqrt(2 * dof), f"chi-square {chi2:.1f} on {dof} degrees of freedom"


def test_answer_logprobs_do_not_depend_on_the_other_prompts_in_the_batch(tiny_addition):
    model, tokenizer = tiny_addition
    answers = AdditionTask().all_answers()[:50]
    alone = answer_logprobs(model, tokenizer, ["5+9="], answers)
    padded = answer_logprobs(model, tokenizer, ["5+9=", "99+99="], answers)
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    with pytest.raises(ValueError, match="distinct"):
        answer_logprobs(model, tokenizer, ["5+9="], ["1", "1"])


def test_oracle_reports_zero_kl_for_the_reference_and_accuracy_as_the_mass_on_the_sum(tiny_addition):
    model, tokenizer = tiny_addition
    task = AdditionTask()
    prompts = task.prompts(4, seed=3)
    oracle = AdditionOracle(task, model, tokenizer, prompts)
    report = oracle.report(model, beta=0.5)
    assert report["kl_to_ref"] == pytest.approx(0.0, abs=1e-9)
    a, b = task.parse_prompt(prompts[0])
    p_sum = float(oracle.ref_logprobs[0, oracle.answers.index(str(a + b))].exp())
    per_prompt = expected_reward(oracle.ref_logprobs, oracle.correct)
    assert float(per_prompt[0]) == pytest.approx(p_sum) and report["accuracy"] == pytest.approx(float(per_prompt.mean()))
    optimum_kl = kl_divergence(oracle.ref_logprobs, oracle.optimum(0.5)).mean()
    assert report["kl_to_optimum"] == pytest.approx(float(optimum_kl))


def test_sweep_and_explorer_follow_the_optimum_headless():
    ref, rewards = random_problem(seed=4)
    correct = (rewards == 1).double()
    betas = [0.03, 0.3, 3.0, 30.0]
    sweep = kl_optimum_sweep(ref, rewards, correct, betas)
    assert sweep["kl"][0] > sweep["kl"][-1] and sweep["accuracy"][0] > sweep["accuracy"][-1]
    assert sweep["value"] == pytest.approx(sweep["reward"] - torch.tensor(betas).double().numpy() * sweep["kl"])
    view = optimum_view(ref[0], rewards[0], correct[0], [f"y{i}" for i in range(11)], beta=0.3, top=5)
    assert len(view.labels) == 5 and view.optimum_probs.sum() <= 1 + 1e-12
    explorer = KLOptimumExplorer(ref, rewards, correct, [f"y{i}" for i in range(11)], ["p0", "p1", "p2"])
    explorer.slider.value = 0.05
    assert explorer.view.beta == pytest.approx(0.05)
    explorer.prompt.value = 2
    assert explorer.view.prompt_index == 2
