"""The synthetic tasks of Part 2: the review language with its gold scorer, and two-digit addition."""
from __future__ import annotations

import pytest

from seqrl.text import AdditionTask, ReviewGrammar


def test_review_vocabulary_has_27_symbols_with_distinct_pad_and_eos():
    tok = ReviewGrammar().tokenizer()
    assert tok.vocab_size == 27
    assert tok.pad_id != tok.eos_id
    text = "<bos> the plot was very dull and the music was fun . <eos>"
    assert tok.decode(tok.encode(text)) == text


def test_review_samples_are_grammatical_deterministic_and_varied():
    grammar = ReviewGrammar()
    reviews = grammar.sample(2000, seed=0)
    assert reviews == grammar.sample(2000, seed=0)
    assert all(grammar.is_grammatical(r) for r in reviews)
    clause_counts = {r.count(" and ") + 1 for r in reviews}
    assert clause_counts == {1, 2, 3, 4}


@pytest.mark.parametrize("text,expected", [
    ("the plot was good .", 1.0),
    ("the plot was very dull and the music was fun .", (-1.5 + 1.0) / 2),
    ("the plot was not good .", -1.0),
    ("the ending was really boring <eos>", -2.0),  # no "." : unfinished sentence
    ("the plot was long .", 0.0),
    ("plot was good .", -2.0),
    ("the plot was good and .", -2.0),
    ("the plot was good . the", -2.0),
    ("the movie was good and the plot was good and the music was good and the acting was great .", 1.0 - 0.5),
    ("the plot was good . <eos> <pad> <pad>", 1.0),
])
def test_review_gold_scores_match_the_definition(text, expected):
    assert ReviewGrammar().gold(text) == pytest.approx(expected)


def test_review_gold_penalises_unfinished_responses():
    assert ReviewGrammar().gold("the plot was good .", finished=False) == -2.0


def test_addition_corpus_has_the_requested_error_rate_and_plausible_mistakes():
    task = AdditionTask()
    pairs = task.corpus(5000, seed=0)
    assert pairs == task.corpus(5000, seed=0)
    wrong = []
    for prompt, answer in pairs:
        a, b = task.parse_prompt(prompt)
        if int(answer) != a + b:
            wrong.append(abs(int(answer) - (a + b)))
    assert abs(len(wrong) / len(pairs) - 0.3) < 0.03
    assert set(wrong) <= {1, 10}


def test_addition_gold_and_answer_enumeration():
    task = AdditionTask()
    assert task.gold("12+30=", "42") == 1.0
    assert task.gold("12+30=", "42<eos>") == 1.0
    assert task.gold("12+30=", "43") == 0.0
    assert task.gold("12+30=", "042") == 0.0
    assert task.gold("12+30=", "4a") == -1.0
    assert task.gold("12+30=", "42", finished=False) == -1.0
    answers = task.all_answers()
    assert len(answers) == 10 + 100 + 1000 and len(set(answers)) == len(answers)
    assert task.tokenizer().vocab_size == 15
    with pytest.raises(ValueError, match="addition prompt"):
        task.parse_prompt("hello")
