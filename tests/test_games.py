"""Tests of seqrl.games: the oracles, the behaviour policies, the offline datasets and the game engine."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from seqrl.games import (
    GuessMyNumber,
    LanguageModelAgent,
    OfflineDataset,
    ScriptedAgent,
    Turn,
    TwentyQuestions,
    build_dataset,
    mix_counts,
    play,
    rollout,
)
from seqrl.games.play import parse_dialogue
from seqrl.games.twenty_questions import QUESTIONS, WORLD
from seqrl.models import GPT, GPTConfig

MIX = {"random": 1.0, "noisy": 1.0, "expert": 1.0}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def twenty():
    return TwentyQuestions()


@pytest.fixture(scope="module")
def number():
    return GuessMyNumber()


@pytest.fixture(scope="module")
def dataset(twenty):
    return build_dataset(twenty, 300, MIX, seed=3)


# ---------------------------------------------------------------------------- the oracles
def test_twenty_questions_oracle_answers_every_question_as_the_world_says(twenty):
    for s, (name, attributes) in enumerate(WORLD.items()):
        for question, value in zip(QUESTIONS, attributes):
            assert twenty.answer(s, question) == ("yes ." if value else "no .")
        for guess in WORLD:
            expected = "correct !" if guess == name else "no ."
            article = "an" if guess[0] in "aeiou" else "a"
            assert twenty.answer(s, f"is it {article} {guess} ?") == expected


def test_twenty_questions_world_is_a_perfect_four_bit_code(twenty):
    codes = {tuple(row[:4]) for row in twenty.attributes}
    assert len(codes) == twenty.n_secrets == 16


def test_guess_my_number_oracle_says_higher_lower_correct(number):
    for secret in range(1, 16):
        for guess in range(1, 16):
            expected = "higher ." if secret > guess else "lower ." if secret < guess else "correct !"
            assert number.answer(secret - 1, f"is it {guess} ?") == expected


def test_oracle_answers_an_ill_formed_utterance_with_pardon(twenty):
    assert twenty.answer(0, "is it big") == "pardon ?"
    assert twenty.answer(0, "cat cat ?") == "pardon ?"


@pytest.mark.parametrize("task_name", ["twenty", "number"])
@pytest.mark.parametrize("policy", ["random", "noisy", "expert"])
def test_oracle_never_contradicts_the_world_the_secret_stays_consistent(task_name, policy, request):
    task = request.getfixturevalue(task_name)
    rng = np.random.default_rng(0)
    for secret in range(task.n_secrets):
        turns = rollout(task, task.policy(policy), secret, rng)
        assert task.consistent(turns)[secret]
        assert 1 <= len(turns) <= task.turn_limit


# ---------------------------------------------------------------------------- behaviour policies
def _mean_expert_turns(task) -> float:
    rng = np.random.default_rng(0)
    return float(np.mean([len(rollout(task, task.policy("expert"), s, rng)) for s in range(task.n_secrets)]))


def test_expert_needs_log2_n_plus_one_half_turns_in_twenty_questions(twenty):
    # log2(16) - 1 = 3 halving questions, then a guess that is right half the time: 4.5 turns.
    assert _mean_expert_turns(twenty) == pytest.approx(math.log2(16) + 0.5)
    assert twenty.optimal_mean_turns() == 4.5


def test_expert_is_binary_search_in_guess_my_number(number):
    # perfect BST over 15 numbers: (1*1 + 2*2 + 3*4 + 4*8) / 15 = 49/15
    assert _mean_expert_turns(number) == pytest.approx(49 / 15)
    assert number.optimal_mean_turns() == pytest.approx(49 / 15)
    rng = np.random.default_rng(0)
    assert max(len(rollout(number, number.policy("expert"), s, rng)) for s in range(15)) == 4


@pytest.mark.parametrize("task_name", ["twenty", "number"])
def test_random_policy_is_much_worse_than_the_expert(task_name, request):
    task = request.getfixturevalue(task_name)
    data = build_dataset(task, 600, MIX, seed=0).summary()
    assert data["expert"]["success"] == 1.0
    assert data["random"]["return"] < data["expert"]["return"] - 1.5
    assert data["random"]["return"] < data["noisy"]["return"] < data["expert"]["return"]


def test_noisy_policy_mixes_epsilon_uniform_with_the_expert(twenty):
    p = twenty.policy("noisy", epsilon=0.3).probabilities([])
    expert = twenty.policy("expert").probabilities([])
    assert p.sum() == pytest.approx(1.0)
    assert p == pytest.approx(0.3 / twenty.n_utterances + 0.7 * expert)


# ---------------------------------------------------------------------------- the dataset
def test_dataset_rewards_sum_to_returns_which_are_minus_the_turns(dataset):
    assert torch.equal(dataset.rewards.sum(1), dataset.returns)
    assert torch.equal(dataset.returns, -dataset.turns.float())
    assert dataset.terminal.all()


def test_dataset_action_mask_is_exactly_the_agent_tokens(twenty, dataset):
    tok = twenty.tokenizer()
    agent, sep, user = tok.token_id("<agent>"), tok.token_id("<sep>"), tok.token_id("<user>")
    for row, acts, rewards in zip(dataset.tokens.tolist(), dataset.action_mask.tolist(), dataset.rewards.tolist()):
        writing = False
        for token, act, reward in zip(row, acts, rewards):
            if token == agent:
                writing, expected = True, 0
            elif token == sep:
                writing, expected = False, 1
            elif token == user:
                writing, expected = False, 0
            else:
                expected = int(writing)
            assert act == expected
            assert reward == (-1.0 if token == sep else 0.0)


def test_dataset_rows_are_right_padded_dialogues_ending_with_eos(twenty, dataset):
    tok = twenty.tokenizer()
    lengths = dataset.mask.sum(1)
    for i in range(len(dataset)):
        n = int(lengths[i])
        assert dataset.mask[i, :n].all() and not dataset.mask[i, n:].any()
        assert (dataset.tokens[i, n:] == tok.pad_id).all()
        assert dataset.tokens[i, 0] == tok.bos_id and dataset.tokens[i, n - 1] == tok.eos_id
        assert tok.decode(dataset.tokens[i, :n]) == dataset.texts[i]
        assert bool(dataset.success[i]) == dataset.texts[i].endswith("correct ! <eos>")


def test_dataset_mix_and_subset(dataset):
    assert sorted(set(dataset.behaviour)) == ["expert", "noisy", "random"]
    assert all(dataset.behaviour.count(b) == 100 for b in MIX)
    part = dataset.subset(torch.tensor([b == "expert" for b in dataset.behaviour]))
    assert len(part) == 100 and set(part.behaviour) == {"expert"}
    assert torch.equal(part.returns, dataset.returns[[i for i, b in enumerate(dataset.behaviour) if b == "expert"]])
    assert len(dataset.subset(slice(0, 10))) == 10


def test_dataset_rebuilt_with_the_same_seed_is_identical(twenty):
    a, b = build_dataset(twenty, 50, MIX, seed=7), build_dataset(twenty, 50, MIX, seed=7)
    c = build_dataset(twenty, 50, MIX, seed=8)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts and a.behaviour == b.behaviour
    assert a.texts != c.texts


def test_mix_counts_round_by_largest_remainder():
    assert mix_counts({"random": 1, "noisy": 1, "expert": 1}, 10) == {"random": 4, "noisy": 3, "expert": 3}
    assert mix_counts("expert", 5) == {"expert": 5}


def test_bad_input_raises_clear_errors(twenty):
    with pytest.raises(ValueError, match="unknown behaviour"):
        build_dataset(twenty, 10, {"genius": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        build_dataset(twenty, 10, {"random": -1.0})
    with pytest.raises(ValueError, match="n_episodes"):
        build_dataset(twenty, 0, "random")
    with pytest.raises(ValueError, match="epsilon"):
        twenty.policy("noisy", epsilon=1.5)
    with pytest.raises(ValueError, match="next_token_logits"):
        play(twenty, object(), 2)

    class WrongShape:
        def next_token_logits(self, tokens, mask):
            return torch.zeros(tokens.shape[0], 3)

    with pytest.raises(ValueError, match="vocab"):
        play(twenty, WrongShape(), 2)
    with pytest.raises(ValueError, match="shape"):
        OfflineDataset(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4), torch.zeros(2, 3), torch.zeros(2, 3),
                       torch.ones(2, dtype=torch.bool), torch.zeros(2), torch.zeros(2, dtype=torch.bool), ["a", "b"], ["", ""])


# ---------------------------------------------------------------------------- the game engine
@pytest.mark.parametrize("task_name", ["twenty", "number"])
def test_play_with_the_scripted_expert_reproduces_the_logged_expert(task_name, request):
    task = request.getfixturevalue(task_name)
    logged = build_dataset(task, 40, "expert", seed=5)
    played = play(task, ScriptedAgent(task, "expert"), 40, seed=5, greedy=True)
    assert torch.equal(played["return"], logged.returns)
    assert played["dialogues"] == logged.texts
    assert played["invalid"].sum() == 0


def test_scripted_agent_token_policy_is_the_utterance_policy_prefix_marginal(twenty):
    agent = ScriptedAgent(twenty, "noisy", epsilon=0.4)
    tok = twenty.tokenizer()
    history = [tok.bos_id, tok.token_id("<agent>")]
    p_utterance = agent.policy.probabilities([])
    for u, ids in enumerate(twenty.utterance_ids):
        prob = 1.0
        for k, token in enumerate((*ids, tok.token_id("<sep>"))):
            prob *= agent.token_distribution(history + list(ids[:k]))[token]
        assert prob == pytest.approx(p_utterance[u])


def test_parse_dialogue_recovers_the_turns_and_the_partial_utterance(twenty):
    turns = [Turn(1, 1), Turn(0, 0)]
    text = twenty.render(turns, finished=False) + " is it"
    parsed, words = parse_dialogue(twenty, twenty.tokenizer().encode(text))
    assert [(t.utterance, t.reply) for t in parsed] == [(1, 1), (0, 0)]
    assert twenty.tokenizer().decode(words) == "is it"


def test_play_is_deterministic_and_noisy_matches_its_logged_returns(twenty):
    agent = ScriptedAgent(twenty, "noisy")
    a, b = play(twenty, agent, 100, seed=1), play(twenty, agent, 100, seed=1)
    assert torch.equal(a["return"], b["return"]) and a["dialogues"] == b["dialogues"]
    logged = build_dataset(twenty, 1000, "noisy", seed=2).returns
    assert abs(float(a["return"].mean()) - float(logged.mean())) < 4 * float(logged.std()) / 100 ** 0.5


def test_an_untrained_language_model_plays_but_mostly_talks_nonsense(number):
    torch.manual_seed(0)
    tok = number.tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=number.max_tokens(), n_layer=1, n_head=2, n_embd=16))
    result = play(number, LanguageModelAgent(model), 16, seed=0)
    assert ((result["return"] <= -1) & (result["return"] >= -number.turn_limit)).all()
    assert result["invalid"].sum() > 0
    assert all(d.startswith("<bos> <agent>") and d.endswith("<eos>") for d in result["dialogues"])


class _CountingAgent(LanguageModelAgent):
    """Counts how the engine asked for logits: whole histories or new tokens after a cache."""

    def __init__(self, model):
        super().__init__(model)
        self.whole, self.incremental = 0, 0

    def next_token_logits(self, tokens, mask):
        self.whole += 1
        return super().next_token_logits(tokens, mask)

    def cached_logits(self, new_tokens, attention_mask, cache):
        self.incremental += 1
        return super().cached_logits(new_tokens, attention_mask, cache)


@pytest.fixture(scope="module")
def weak_clone(number):
    from seqrl.offline.bc import train_bc

    torch.manual_seed(0)
    tok = number.tokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=number.max_tokens(), n_layer=1, n_head=2, n_embd=32))
    train_bc(model, build_dataset(number, 300, MIX, seed=0), steps=60, batch_size=32, seed=0)
    return model


def test_play_with_a_kv_cache_plays_the_games_of_the_recomputing_path(number, weak_clone):
    agent = _CountingAgent(weak_clone)
    cached = play(number, agent, 32, seed=4, greedy=True)
    assert agent.incremental > 0 and agent.whole == 0, "a LanguageModelAgent is fed only its new tokens"
    recomputed = play(number, LanguageModelAgent(weak_clone), 32, seed=4, greedy=True, use_cache=False)
    assert cached["dialogues"] == recomputed["dialogues"]
    assert max(len(d.split()) for d in cached["dialogues"]) > 20  # long games: many cached steps
    sampled = play(number, agent, 32, seed=5)
    sampled_again = play(number, agent, 32, seed=5, use_cache=False)
    same = [a == b for a, b in zip(sampled["dialogues"], sampled_again["dialogues"])]
    assert sum(same) >= 30  # the same draws (a probability tie to the 6th digit could flip a token)
    rows = torch.tensor(same)
    torch.testing.assert_close(sampled["logprobs"][rows], sampled_again["logprobs"][rows], atol=1e-4, rtol=0)


def test_play_falls_back_to_recomputing_when_the_cache_is_full(number, weak_clone, monkeypatch):
    engine = importlib.import_module("seqrl.games.play")  # the module (seqrl.games.play is also the function)

    monkeypatch.setattr(engine, "CACHE_SLOTS", 12)  # full after a few steps
    agent = _CountingAgent(weak_clone)
    result = play(number, agent, 16, seed=4, greedy=True)
    assert agent.incremental > 0 and agent.whole > 0
    assert result["dialogues"] == play(number, LanguageModelAgent(weak_clone), 16, seed=4, greedy=True, use_cache=False)["dialogues"]


def test_guesser_only_guesses_consistent_secrets_and_is_mediocre(twenty, number):
    p = twenty.policy("guesser").probabilities([Turn(0, 1)])  # "is it an animal ?" -> "no ."
    assert p[: twenty.n_questions].sum() == 0 and p.sum() == pytest.approx(1.0)
    assert np.count_nonzero(p) == 8  # the eight things
    for task in (twenty, number):
        data = build_dataset(task, 400, {"guesser": 1, "expert": 1}, seed=0).summary()
        assert data["guesser"]["return"] < data["expert"]["return"] - 0.5


def test_dialogue_recipe_trains_a_clone_and_reports_its_play(monkeypatch):
    monkeypatch.setenv("SEQRL_NUM_THREADS", "1")
    from seqrl.pretrained import recipes
    from seqrl.zoo import build_dialogue_bc

    assert {"twenty_questions_bc", "guess_my_number_bc"} <= set(recipes())
    result = build_dialogue_bc("guess_my_number", 0, n_train=40, n_val=10, steps=2, batch_size=4, n_eval=4, n_layer=1, n_embd=16, n_head=2)
    assert result.name == "guess_my_number_bc"
    assert -8 <= result.metrics["sampled_return"] <= -1 and "data_return" in result.metrics
