"""Preference pairs: Bradley–Terry labels at the right rates, determinism, and the stored layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrl.models import GPT, GPTConfig
from seqrl.rlhf import PreferencePairs, bradley_terry_labels, review_gold, sample_preference_pairs
from seqrl.text import AdditionTask, ReviewGrammar

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


@pytest.fixture
def review_lm():
    """An untrained GPT over the review vocabulary: its samples are diverse (mostly ungrammatical) text."""
    tokenizer = ReviewGrammar().tokenizer()
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval(), tokenizer


def word_count(prompts, texts, finished):
    """A gold with many distinct values: longer responses are better."""
    return torch.tensor([float(len(t.split())) for t in texts])


def test_bradley_terry_labels_follow_the_logistic_of_the_gold_margin():
    n = 20_000
    margins = torch.tensor([2.0, 0.5, 0.0, -1.0]).repeat_interleave(n)
    for tau in (1.0, 0.5):
        a_wins = bradley_terry_labels(margins, torch.zeros_like(margins), tau, np.random.default_rng(0)).view(4, n)
        rates = a_wins.double().mean(dim=1)
        expected = torch.sigmoid(torch.tensor([2.0, 0.5, 0.0, -1.0], dtype=torch.float64) / tau)
        standard_error = (expected * (1 - expected) / n).sqrt()
        assert ((rates - expected).abs() < 4 * standard_error).all(), (tau, rates, expected)


def test_noiseless_labels_pick_the_larger_gold_and_toss_a_coin_on_ties():
    gold_a = torch.tensor([1.0, 0.0] + [3.0] * 4000)
    gold_b = torch.tensor([0.0, 1.0] + [3.0] * 4000)
    a_wins = bradley_terry_labels(gold_a, gold_b, 0.0, np.random.default_rng(1))
    assert a_wins[0] and not a_wins[1]
    assert abs(a_wins[2:].double().mean().item() - 0.5) < 0.03
    with pytest.raises(ValueError, match="label_temperature"):
        bradley_terry_labels(gold_a, gold_b, -1.0, np.random.default_rng(0))


def test_sampled_pairs_are_the_same_for_the_same_seed(review_lm):
    model, tokenizer = review_lm
    first = sample_preference_pairs(model, tokenizer, [""], word_count, 64, seed=3)
    again = sample_preference_pairs(model, tokenizer, [""], word_count, 64, seed=3)
    other = sample_preference_pairs(model, tokenizer, [""], word_count, 64, seed=4)
    assert first == again
    assert first.chosen != other.chosen


def test_noiseless_labeller_always_prefers_the_higher_gold(review_lm):
    model, tokenizer = review_lm
    pairs = sample_preference_pairs(model, tokenizer, [""], word_count, 128, label_temperature=0.0, seed=0)
    margins = pairs.gold_margins(word_count)
    assert len(pairs) == 128 and (margins >= 0).all() and (margins > 0).any()
    noisy = sample_preference_pairs(model, tokenizer, [""], word_count, 128, label_temperature=5.0, seed=0)
    assert (noisy.gold_margins(word_count) < 0).any(), "a noisy labeller sometimes prefers the worse response"


def test_pairs_encode_back_to_the_responses_with_eos_only_when_finished(review_lm):
    model, tokenizer = review_lm
    pairs = sample_preference_pairs(model, tokenizer, [""], review_gold(), 32, max_new_tokens=6, seed=0)
    assert any(pairs.chosen_finished + pairs.rejected_finished) and not all(pairs.chosen_finished + pairs.rejected_finished)
    chosen, rejected = pairs.encode(tokenizer)
    for batch, texts, finished in ((chosen, pairs.chosen, pairs.chosen_finished), (rejected, pairs.rejected, pairs.rejected_finished)):
        assert batch.texts == texts and batch.finished.tolist() == finished
        assert torch.equal(batch.prompt_tokens, torch.full((32, 1), tokenizer.bos_id))  # "" is just <bos>
        ends_with_eos = (batch.tokens == tokenizer.eos_id).any(dim=1)
        assert ends_with_eos.tolist() == finished
        decoded = tokenizer.decode_batch(batch.tokens, stop_at_eos=True, skip_special=True)
        assert decoded == texts


def test_conditional_prompts_are_cycled_and_kept_with_their_pairs():
    task = AdditionTask()
    tokenizer = task.tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=12, n_layer=1, n_head=2, n_embd=16)).eval()
    prompts = ["1+2=", "33+44="]
    pairs = sample_preference_pairs(model, tokenizer, prompts, lambda p, t, f: torch.zeros(len(t)), 5, seed=0)
    assert pairs.prompts == ["1+2=", "33+44=", "1+2=", "33+44=", "1+2="]
    chosen, _ = pairs.encode(tokenizer)
    assert chosen.prompt_tokens.shape[1] + chosen.tokens.shape[1] <= 12  # the default length fills the context
    sampler = lambda n, seed: [f"{seed}+{i}=" for i in range(n)]  # noqa: E731
    assert sample_preference_pairs(model, tokenizer, sampler, lambda p, t, f: torch.zeros(len(t)), 3, seed=7).prompts == ["7+0=", "7+1=", "7+2="]


def test_subset_and_split_keep_pairs_together():
    pairs = PreferencePairs(["", "", ""], ["a", "b", "c"], ["x", "y", "z"], [True, False, True], [False, True, True])
    picked = pairs.subset([2, 0])
    assert picked.chosen == ["c", "a"] and picked.rejected == ["z", "x"] and picked.chosen_finished == [True, True]
    assert pairs.subset(torch.tensor([1])).rejected_finished == [True]
    first, rest = pairs.split(1)
    assert len(first) == 1 and rest.chosen == ["b", "c"]
    with pytest.raises(ValueError, match="out of range"):
        pairs.subset([3])


def test_malformed_pairs_and_requests_fail_with_clear_messages(review_lm):
    model, tokenizer = review_lm
    with pytest.raises(ValueError, match="one entry per pair"):
        PreferencePairs([""], ["a", "b"], ["c"], [True], [True])
    with pytest.raises(ValueError, match="n_pairs"):
        sample_preference_pairs(model, tokenizer, [""], word_count, 0)
    with pytest.raises(ValueError, match="at least one prompt"):
        sample_preference_pairs(model, tokenizer, [], word_count, 4)
    with pytest.raises(ValueError, match="no pairs"):
        PreferencePairs([], [], [], [], []).encode(tokenizer)
