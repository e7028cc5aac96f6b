"""Reward models: the score lives on the last real token, padding cannot move it, normalisation,
and a Bradley–Terry fit that learns the gold's ordering."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from seqrl.models import GPT, GPTConfig, encode_completions
from seqrl.rlhf import (
    PreferencePairs,
    RewardModel,
    bradley_terry_labels,
    pairwise_agreement,
    review_gold,
    train_reward_model,
)
from seqrl.text import ReviewGrammar

GRAMMAR = ReviewGrammar()
TOKENIZER = GRAMMAR.tokenizer()
GOLD = review_gold(GRAMMAR)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def grammar_pairs(n: int, seed: int, label_temperature: float = 0.5) -> PreferencePairs:
    """``n`` pairs of grammatical reviews labelled by Bradley–Terry on the gold (no policy needed)."""
    texts = GRAMMAR.sample(2 * n, seed)
    scores = GOLD([""] * 2 * n, texts, torch.ones(2 * n, dtype=torch.bool))
    a_wins = bradley_terry_labels(scores[:n], scores[n:], label_temperature, np.random.default_rng(seed)).tolist()
    chosen = [texts[i] if w else texts[n + i] for i, w in enumerate(a_wins)]
    rejected = [texts[n + i] if w else texts[i] for i, w in enumerate(a_wins)]
    return PreferencePairs([""] * n, chosen, rejected, [True] * n, [True] * n)


@pytest.fixture
def trunk() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)).eval()


@pytest.fixture
def reviews_batch():
    texts = ["the plot was fun .", "the music was not good and the ending was very dull .", "the movie was"]
    return encode_completions(TOKENIZER, [""] * 3, texts, [True, True, False])


def test_head_starts_with_the_ziegler_initialisation_and_the_policy_is_left_untouched(trunk):
    rm = RewardModel(trunk, TOKENIZER, seed=0)
    weight = rm.head.linear.weight
    assert weight.std().item() == pytest.approx(1 / np.sqrt(32 + 1), rel=0.35) and rm.head.linear.bias.item() == 0.0
    assert rm.trunk is not trunk
    before = copy.deepcopy(trunk.state_dict())
    train_reward_model(rm, grammar_pairs(32, seed=0), epochs=1, batch_size=16, lr=1e-2)
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())


def test_score_is_invariant_to_trailing_padding(trunk, reviews_batch):
    rm = RewardModel(trunk, TOKENIZER)
    sequences, mask = reviews_batch.sequences, reviews_batch.attention_mask
    extra = 5
    padded = torch.cat([sequences, torch.full((3, extra), TOKENIZER.pad_id)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, extra, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(rm(padded, padded_mask), rm(sequences, mask), atol=1e-6, rtol=0)
        # ... and to what the padding slots hold
        junk = padded.clone()
        junk[padded_mask == 0] = TOKENIZER.eos_id
        torch.testing.assert_close(rm(junk, padded_mask), rm(sequences, mask), atol=1e-6, rtol=0)
    # scoring a text alone or next to a much longer one gives the same number
    alone = rm.score_texts([""], ["the plot was fun ."], [True])
    together = rm.score_texts([""] * 2, ["the plot was fun .", "the plot was fun and the music was good ."], [True, True])
    torch.testing.assert_close(alone, together[:1], atol=1e-6, rtol=0)


def test_score_is_read_at_eos_not_at_the_slot_after_it(trunk, reviews_batch):
    rm = RewardModel(trunk, TOKENIZER)
    sequences, mask = reviews_batch.sequences, reviews_batch.attention_mask
    with torch.no_grad():
        hidden = rm.trunk(sequences, attention_mask=mask).hidden
        scores = rm(reviews_batch)
    eos = 1 + 4  # <bos> then "the plot was fun ." : the <eos> of row 0 is column 6
    assert sequences[0, eos + 1] == TOKENIZER.eos_id and mask[0, eos + 2] == 0
    torch.testing.assert_close(scores[0], rm.head(hidden[0, eos + 1]))
    assert not torch.allclose(scores[0], rm.head(hidden[0, eos + 2])), "the pad slot after <eos> is a different score"
    # an unfinished response is scored at its last written token
    last = int(mask[2].nonzero().max())
    assert sequences[2, last] != TOKENIZER.eos_id
    torch.testing.assert_close(scores[2], rm.head(hidden[2, last]))


def test_normalised_rewards_have_mean_zero_and_std_one_on_reference_samples(trunk):
    rm = RewardModel(trunk, TOKENIZER)
    reference = GRAMMAR.sample(300, seed=5)
    gain, bias = rm.normalise([""] * 300, reference, [True] * 300)
    scores = rm.score_texts([""] * 300, reference, [True] * 300).double()
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5) and scores.std().item() == pytest.approx(1.0, abs=1e-5)
    assert gain > 0
    fresh = rm.score_texts([""] * 300, GRAMMAR.sample(300, seed=6), [True] * 300)
    assert abs(fresh.mean().item()) < 0.3, "new reference samples are also centred (up to sampling error)"


def test_reward_fn_scores_any_batch_including_an_empty_unfinished_response(trunk):
    reward = RewardModel(trunk, TOKENIZER).reward_fn()
    scores = reward(["", "", ""], ["the plot was fun .", "", "the"], torch.tensor([True, False, False]))
    assert scores.shape == (3,) and torch.isfinite(scores).all()


def test_bradley_terry_fit_learns_the_gold_ordering(trunk):
    """600 noisy pairs, 3 epochs: held-out agreement with the gold well above chance (about 0.83)."""
    train, held_out = grammar_pairs(600, seed=0), grammar_pairs(300, seed=1)
    rm = RewardModel(trunk, TOKENIZER, seed=0)
    history = train_reward_model(rm, train, epochs=3, lr=3e-3, batch_size=32, seed=0, eval_pairs=held_out, gold=GOLD)
    assert np.mean(history.loss[-10:]) < np.mean(history.loss[:10]) - 0.1, "the Bradley–Terry loss decreases"
    assert history.eval_agreement[0] < 0.65 < 0.75 <= history.eval_agreement[-1]
    assert history.eval_agreement[-1] == pairwise_agreement(rm, held_out, GOLD)
    assert pairwise_agreement(rm, train) > 0.6, "the training labels are noisy, so well below 1"


def test_training_is_deterministic_under_a_seed(trunk):
    pairs = grammar_pairs(64, seed=2)
    runs = []
    for _ in range(2):
        rm = RewardModel(trunk, TOKENIZER, seed=1)
        history = train_reward_model(rm, pairs, epochs=2, batch_size=16, lr=3e-3, seed=4)
        runs.append((history.loss, rm.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_bad_training_requests_fail_with_clear_messages(trunk):
    rm = RewardModel(trunk, TOKENIZER)
    pairs = grammar_pairs(10, seed=0)
    with pytest.raises(ValueError, match="0 preference pairs"):
        train_reward_model(rm, pairs.subset([]))
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 10\]"):
        train_reward_model(rm, pairs, batch_size=64)
    with pytest.raises(ValueError, match="epochs"):
        train_reward_model(rm, pairs, epochs=0, batch_size=5)
    with pytest.raises(ValueError, match="attention_mask"):
        rm(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="0 pairs"):
        pairwise_agreement(rm, pairs.subset([]))
