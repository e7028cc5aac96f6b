"""Best-of-n: order-statistic estimates equal brute force, the exact distribution matches simulation,
and its exact KL never exceeds log n - (n-1)/n."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from seqrl.models import GPT, GPTConfig
from seqrl.rlhf import (
    AdditionOracle,
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
from seqrl.text import AdditionTask, ReviewGrammar

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def test_kl_bound_is_zero_at_one_and_grows_like_log_n():
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    bounds = best_of_n_kl_bound([1, 4, 16, 256])
    assert np.all(np.diff(bounds) > 0) and bounds[-1] == pytest.approx(math.log(256) - 255 / 256)
    with pytest.raises(ValueError, match="positive int"):
        best_of_n_kl_bound(0)


def test_order_statistic_weights_are_the_probability_that_item_i_is_the_best_of_a_subset():
    m, n = 7, 3
    counts = torch.zeros(m, dtype=torch.float64)
    for subset in itertools.combinations(range(m), n):
        counts[max(subset)] += 1
    torch.testing.assert_close(order_statistic_weights(m, n), counts / counts.sum())
    assert order_statistic_weights(2000, 500).sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pool of at least 9"):
        order_statistic_weights(8, 9)


def test_pool_estimate_equals_the_average_over_every_subset_even_with_ties():
    proxy = torch.tensor([[0.3, 1.0, 0.3, -2.0, 1.0, 0.7], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    gold = torch.tensor([[1.0, -1.0, 2.0, 0.0, 3.0, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    for n in (1, 2, 3, 6):
        brute = []
        for row in range(2):
            total = 0.0
            subsets = list(itertools.combinations(range(6), n))
            for subset in subsets:
                best = max(proxy[row, list(subset)])
                winners = [i for i in subset if proxy[row, i] == best]
                total += sum(gold[row, i].item() for i in winners) / len(winners)  # ties broken uniformly
            brute.append(total / len(subsets))
        torch.testing.assert_close(best_of_n_expectation(proxy, gold, n), torch.tensor(brute, dtype=torch.float64))


def test_literal_groups_agree_with_the_pool_estimate_within_sampling_error():
    generator = torch.Generator().manual_seed(0)
    proxy = torch.randn(4, 4096, generator=generator)
    gold = proxy + torch.randn(4, 4096, generator=generator)
    groups = best_of_n_groups(proxy, gold, 8, seed=1)
    assert groups.shape == (4, 512)
    estimate = best_of_n_expectation(proxy, gold, 8).mean()
    assert abs(groups.mean() - estimate) < 4 * groups.std() / math.sqrt(groups.numel())


def test_curve_shows_a_gold_peak_at_an_interior_n_while_the_proxy_keeps_rising():
    """Goodhart toy: the proxy is a latent x, the gold x - x^2/4 peaks at x = 2 (the top ~2% of samples)."""
    generator = torch.Generator().manual_seed(0)
    proxy = torch.randn(8, 2048, generator=generator, dtype=torch.float64)
    gold = proxy - proxy**2 / 4
    curve = best_of_n_curve(proxy, {"proxy": proxy, "gold": gold}, [1, 2, 4, 8, 16, 64, 256, 1024])
    assert np.all(np.diff(curve.mean["proxy"]) > 0)
    assert 4 <= curve.best_n("gold") <= 256, curve.mean["gold"]
    assert curve.mean["gold"][-1] < curve.mean["gold"].max() - 5 * curve.stderr["gold"][-1]
    alpha, beta, r2 = fit_best_of_n_gain(curve.sqrt_kl, curve.mean["gold"] - curve.mean["gold"][0])
    assert alpha > 0 and beta > 0 and r2 > 0.5


def toy_distribution(seed: int = 0):
    """Eight responses with proxies that tie in two places."""
    probs = torch.tensor([0.30, 0.05, 0.20, 0.10, 0.15, 0.05, 0.10, 0.05], dtype=torch.float64)
    proxy = torch.tensor([0.0, 1.0, 1.0, 2.0, -1.0, 3.0, 0.0, 2.5], dtype=torch.float64)
    return probs.log(), proxy


def test_best_of_one_is_the_reference_with_zero_kl():
    logp, proxy = toy_distribution()
    torch.testing.assert_close(best_of_n_logprobs(logp, proxy, 1), logp)
    assert best_of_n_kl(logp, proxy, 1).item() == pytest.approx(0.0, abs=1e-12)


def test_exact_best_of_n_matches_simulation_with_ties():
    logp, proxy = toy_distribution()
    n, trials = 4, 40_000
    exact = best_of_n_logprobs(logp, proxy, n).exp()
    assert exact.sum().item() == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    draws = torch.multinomial(logp.exp().expand(trials, -1), n, replacement=True, generator=generator)  # (trials, n)
    scores = proxy[draws] + 1e-9 * torch.rand(trials, n, generator=generator, dtype=torch.float64)  # uniform tie-break
    picked = draws.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)
    frequencies = torch.bincount(picked, minlength=8).double() / trials
    standard_error = (exact * (1 - exact) / trials).sqrt()
    assert ((frequencies - exact).abs() <= 4.5 * standard_error + 1e-12).all(), (frequencies, exact)


def test_exact_kl_never_exceeds_the_bound_and_is_far_below_it_when_responses_carry_mass():
    logp, proxy = toy_distribution()
    for n in (1, 2, 4, 16, 256):
        kl = best_of_n_kl(logp, proxy, n).item()
        assert kl <= best_of_n_kl_bound(n) + 1e-12
    # BoN-256 is (almost) the single best response: KL -> -log pi(best) = log 20, not log 256 - 1
    assert best_of_n_kl(logp, proxy, 256).item() == pytest.approx(-logp[5].item(), abs=1e-4)
    assert best_of_n_kl_bound(256) - best_of_n_kl(logp, proxy, 256).item() > 1.5


def test_exact_best_of_n_on_the_addition_answers_respects_the_bound():
    task = AdditionTask()
    tokenizer = task.tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=12, n_layer=1, n_head=2, n_embd=16)).eval()
    oracle = AdditionOracle(task, model, tokenizer, task.prompts(4, seed=3))
    noisy_proxy = oracle.rewards + 0.3 * torch.randn(oracle.rewards.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for n in (1, 4, 32):
        kl = best_of_n_kl(oracle.ref_logprobs, noisy_proxy, n)
        assert kl.shape == (4,) and (kl <= best_of_n_kl_bound(n) + 1e-9).all()
        bon = best_of_n_logprobs(oracle.ref_logprobs, noisy_proxy, n)
        gold_gain = (bon.exp() * oracle.rewards).sum(-1) - (oracle.ref_logprobs.exp() * oracle.rewards).sum(-1)
        assert (gold_gain >= -1e-9).all() if n == 1 else gold_gain.mean() > 0


def test_exact_distribution_needs_a_complete_reference():
    logp, proxy = toy_distribution()
    with pytest.raises(ValueError, match="complete distribution"):
        best_of_n_logprobs(logp[:-1], proxy[:-1], 2)


def test_pools_are_deterministic_and_scored_by_any_reward():
    tokenizer = ReviewGrammar().tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=12, n_layer=1, n_head=2, n_embd=16)).eval()
    pools = sample_pools(model, tokenizer, ["", ""], 16, seed=2)
    again = sample_pools(model, tokenizer, ["", ""], 16, seed=2)
    assert pools.shape == (2, 16) and pools.texts == again.texts and pools.texts[0] != pools.texts[1]
    lengths = pools.score(lambda p, t, f: torch.tensor([float(len(x.split())) for x in t]))
    assert lengths.shape == (2, 16) and lengths[1, 3] == len(pools.texts[1][3].split())
