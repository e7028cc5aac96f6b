"""Tokenizers, padding helpers and the synthetic grammar."""
from __future__ import annotations

import math

import pytest
import torch

from seqrl.text import CharTokenizer, SentenceGrammar, Tokenizer, WordTokenizer, lm_inputs_and_targets, pad_batch, response_mask


def test_char_tokenizer_round_trips_text_and_special_tokens():
    tok = CharTokenizer(tuple("abc .?"))
    for text in ["abc", "a b. c?", "", "<bos>ab<sep>c<eos>"]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("ab", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids, skip_special=True) == "ab"
    assert tok.decode(tok.encode("ab<eos>ca"), stop_at_eos=True) == "ab"


def test_special_tokens_have_fixed_distinct_ids():
    tok = CharTokenizer(tuple("xyz"))
    assert tok.pad_id == 0
    assert len({tok.pad_id, tok.bos_id, tok.eos_id, tok.sep_id}) == 4
    assert tok.vocab_size == len(tok.specials) + 3


def test_word_tokenizer_round_trips():
    tok = WordTokenizer(("the", "plot", "was", "fun", "."))
    text = "<bos> the plot was fun . <eos>"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("the plot"), skip_special=True) == "the plot"


def test_tokenizer_serialises():
    tok = CharTokenizer(tuple("ab"))
    assert Tokenizer.from_dict(tok.to_dict()) == tok


def test_tokenizer_bad_input_is_named():
    tok = CharTokenizer(tuple("ab"))
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, 99])
    with pytest.raises(ValueError, match="unique"):
        CharTokenizer(tuple("aa"))
    with pytest.raises(TypeError):
        tok.encode(["a"])


def test_pad_batch_right_and_left():
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    tokens, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert tokens.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="shorter"):
        pad_batch([[1, 2, 3]], 0, length=2)
    with pytest.raises(ValueError, match="side"):
        pad_batch([[1]], 0, side="middle")


def test_response_mask_includes_the_first_stop_and_nothing_after():
    tokens = torch.tensor([[4, 2, 0, 0], [4, 4, 4, 4], [2, 2, 0, 0]])
    assert response_mask(tokens, stop_token=2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_lm_targets_ignore_padding():
    tokens, mask = pad_batch([[1, 5, 6, 2], [1, 7, 2]], pad_id=0)
    inputs, targets = lm_inputs_and_targets(tokens, mask)
    assert inputs.tolist() == [[1, 5, 6], [1, 7, 2]]
    assert targets.tolist() == [[5, 6, 2], [7, 2, -100]]


def test_grammar_samples_are_grammatical_and_deterministic():
    grammar = SentenceGrammar()
    sentences = grammar.sample(500, seed=3)
    assert sentences == grammar.sample(500, seed=3)
    assert sentences != grammar.sample(500, seed=4)
    assert all(grammar.is_grammatical(s) for s in sentences)
    assert not grammar.is_grammatical("the cat cat sees a dog.")
    assert not grammar.is_grammatical("the cat sees a dog")
    assert set("".join(sentences)) <= set(grammar.alphabet())


def test_grammar_entropy_matches_a_monte_carlo_estimate():
    grammar = SentenceGrammar()
    # Every sentence has probability prod(choices): estimate E[-log p] and E[length] by sampling.
    n = 4000
    sentences = grammar.sample(n, seed=0)
    def log_prob(sentence: str) -> float:
        words = sentence[:-1].split()
        adjectives = sum(w in grammar.adjectives for w in words)
        lp = 2 * math.log(1 / len(grammar.determiners)) + 2 * math.log(1 / len(grammar.nouns)) + math.log(1 / len(grammar.verbs))
        lp += adjectives * math.log(grammar.p_adj / len(grammar.adjectives)) + (2 - adjectives) * math.log(1 - grammar.p_adj)
        return lp
    entropy = -sum(map(log_prob, sentences)) / n
    assert abs(entropy - grammar.entropy_nats()) < 0.05
    mean_tokens = sum(len(s) + 1 for s in sentences) / n
    assert abs(mean_tokens - grammar.mean_tokens()) < 0.2
    assert grammar.num_sentences() == (2 * 6 * 6) * 5 * (2 * 6 * 6)


def test_distinct_rows_ignore_what_sits_under_the_padding():
    from seqrl.text.batching import distinct_rows

    tokens = torch.tensor([[5, 1, 2], [9, 1, 2], [5, 1, 2], [0, 3, 2], [5, 1, 2]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]])
    first, inverse = distinct_rows(tokens, mask)
    # rows 0, 1 and 4: the same real tokens behind different padding; row 2 has a real 5; row 3 differs
    assert len(first) == 3
    assert inverse[0] == inverse[1] == inverse[4] and len({int(inverse[0]), int(inverse[2]), int(inverse[3])}) == 3
    key = tokens.masked_fill(mask == 0, -1)
    assert torch.equal(key[first][inverse], key)
    assert int(first[inverse[0]]) == 0  # the first row of each kind stands for it
    plain_first, plain_inverse = distinct_rows(tokens)  # without a mask every token counts: rows 0 and 1 differ now
    assert len(plain_first) == 3 and plain_inverse[0] == plain_inverse[2] == plain_inverse[4] != plain_inverse[1]
    assert torch.equal(tokens[plain_first][plain_inverse], tokens)
