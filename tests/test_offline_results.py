"""Chapter 08's results machinery against hand counts: filtered BC's data, runs over training seeds,
the LMRL-Gym table, and the registered offline recipes."""
from types import SimpleNamespace

import pytest
import torch

from seqrl.offline import (
    evaluate_runs,
    filter_composition,
    opening_utterances,
    results_table,
    top_fraction,
    top_fraction_rows,
)
from seqrl.offline.results import Evaluation


def toy_log():
    """Six logged episodes: (behaviour, return, opens with a guess)."""
    rows = [("random", -1.0, True), ("expert", -3.0, False), ("random", -8.0, True),
            ("noisy", -4.0, False), ("expert", -3.0, False), ("noisy", -6.0, True)]
    return SimpleNamespace(behaviour=[r[0] for r in rows], returns=torch.tensor([r[1] for r in rows])), torch.tensor([r[2] for r in rows])


def test_top_fraction_rows_keep_the_best_returns_in_row_order_with_ties_by_row():
    data, _ = toy_log()
    # returns -1, -3, -8, -4, -3, -6: the best two are rows 0 and 1 (row 1 beats row 4 on the tie)
    assert top_fraction_rows(data.returns, 2 / 6).tolist() == [0, 1]
    assert top_fraction_rows(data.returns, 0.5).tolist() == [0, 1, 4]
    assert top_fraction_rows(data.returns, 0.01).tolist() == [0]  # at least one episode
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_rows(data.returns, 1.5)


def test_filter_composition_counts_behaviours_returns_and_flags_by_hand():
    data, guess_first = toy_log()
    table = filter_composition(data, [2 / 6, 0.5, 1.0], flag=guess_first)
    top_two = table[2 / 6]  # rows 0 (random, -1, guess) and 1 (expert, -3)
    assert top_two["episodes"] == 2 and top_two["return"] == pytest.approx(-2.0)
    assert (top_two["random"], top_two["expert"], top_two["noisy"]) == (0.5, 0.5, 0.0)
    assert top_two["flagged"] == 0.5
    half = table[0.5]  # rows 0, 1, 4: one lucky random game, two expert games
    assert half["return"] == pytest.approx(-7 / 3) and half["expert"] == pytest.approx(2 / 3)
    assert half["flagged"] == pytest.approx(1 / 3)
    everything = table[1.0]
    assert everything["random"] == everything["noisy"] == everything["expert"] == pytest.approx(1 / 3)
    assert everything["return"] == pytest.approx(-25 / 6) and everything["flagged"] == 0.5


def test_filter_composition_agrees_with_top_fraction_on_a_real_dataset():
    from seqrl.games import TwentyQuestions, build_dataset

    data = build_dataset(TwentyQuestions(), 60, {"random": 1, "expert": 1}, seed=0)
    kept = top_fraction(data, 0.25)
    row = filter_composition(data, [0.25])[0.25]
    assert row["episodes"] == len(kept)
    assert row["return"] == pytest.approx(kept.returns.mean().item())
    assert row["expert"] == pytest.approx(kept.behaviour.count("expert") / len(kept))


def test_filter_composition_rejects_bad_input():
    data, guess_first = toy_log()
    with pytest.raises(ValueError, match="flag"):
        filter_composition(data, [0.5], flag=guess_first[:3])
    with pytest.raises(ValueError, match="fraction"):
        filter_composition(data, [])


def test_opening_utterances_read_the_first_agent_turn():
    texts = ["<bos> <agent> is it a cat ? <sep> <user> no . <agent> is it big ? <sep> <user> yes . <eos>",
             "<bos> <agent> is it 8 ? <sep> <user> correct ! <eos>"]
    assert opening_utterances(texts) == ["is it a cat ?", "is it 8 ?"]
    with pytest.raises(ValueError, match="agent"):
        opening_utterances(["<bos> hello"])


class ConstantGame:
    """A stand-in for a game: every game of agent ``a`` returns ``-a`` and succeeds if ``a < 5``."""

    def __init__(self):
        self.seeds = []

    def play(self, agent, n_episodes, seed):
        self.seeds.append(seed)
        return {"return": torch.full((n_episodes,), -float(agent)), "success": torch.full((n_episodes,), agent < 5),
                "dialogues": [f"agent {agent}"] * n_episodes}


def test_evaluate_runs_gives_one_entry_per_agent_on_the_same_games():
    game = ConstantGame()
    ev = evaluate_runs(game, agents=[4, 6, 5], n_episodes=3, seed=7)
    assert ev.returns == [-4.0, -6.0, -5.0] and ev.mean_return == -5.0 and ev.spread == 2.0
    assert ev.success == pytest.approx(1 / 3)
    assert game.seeds == [7, 7, 7]  # every training seed's agent meets the same secrets
    assert ev.dialogues[0] == "agent 4"
    with pytest.raises(ValueError, match="agent"):
        evaluate_runs(game, agents=[], n_episodes=3)


def test_results_table_rescales_returns_between_random_and_the_best_behaviour():
    results = {"BC": Evaluation([-6.0, -6.5, -5.5], [0.5, 0.5, 0.5], []),
               "ILQL": Evaluation([-4.5, -4.5, -4.5], [1.0, 1.0, 1.0], [])}
    rows = results_table(results, low=-7.0, high=-4.5)
    assert [r["method"] for r in rows] == ["BC", "ILQL"]
    assert rows[0]["return"] == pytest.approx(-6.0) and rows[0]["spread"] == pytest.approx(1.0)
    assert rows[0]["score"] == pytest.approx(40.0)  # 100 * (-6 + 7) / 2.5
    assert rows[1]["score"] == pytest.approx(100.0) and rows[1]["success"] == 1.0
    assert rows[0]["runs"] == [-6.0, -6.5, -5.5]


def test_beats_needs_a_gap_larger_than_either_methods_seed_spread():
    tight = Evaluation([-4.6, -4.5, -4.55], [1.0] * 3, [])  # mean -4.55, spread 0.1
    close = Evaluation([-5.1, -5.0, -5.0], [0.8] * 3, [])  # mean -5.033, spread 0.1
    wide_loser = Evaluation([-5.6, -4.8, -5.2], [0.8] * 3, [])  # mean -5.2, spread 0.8
    wide_winner = Evaluation([-4.0, -4.8, -4.4], [0.9] * 3, [])  # mean -4.4, spread 0.8
    assert tight.beats(close)  # gap 0.48 > 0.1
    assert not close.beats(tight)  # a negative gap never beats
    assert not tight.beats(wide_loser)  # gap 0.65 < the loser's spread 0.8
    assert not wide_winner.beats(close)  # gap 0.63 < the winner's own spread 0.8
    assert wide_winner.beats(Evaluation([-5.3, -5.3, -5.3], [0.5] * 3, []))  # gap 0.9 > 0.8


def test_offline_recipes_start_from_the_pretrained_dialogue_model_and_differ_in_data_only():
    from seqrl import recipes
    from seqrl.offline.recipes import FILTER_TOP, TRAINING_SEEDS

    known = recipes()
    for task, top in FILTER_TOP.items():
        for seed in TRAINING_SEEDS:
            bc, filtered = known[f"{task}_bc_seed{seed}"], known[f"{task}_filtered_bc_seed{seed}"]
            assert bc.seed == filtered.seed == seed
            assert bc.params["init"] == filtered.params["init"] == f"{task}_bc"
            assert bc.params["init_fingerprint"] == known[f"{task}_bc"].fingerprint()
            assert bc.params["top"] == 1.0 and filtered.params["top"] == top < 1.0
            assert {k: v for k, v in bc.params.items() if k != "top"} == {k: v for k, v in filtered.params.items() if k != "top"}


def test_monte_carlo_returns_sum_the_rewards_to_go_of_the_agent_tokens_at_gamma_one():
    from seqrl.offline import monte_carlo_returns

    # agent columns 1, 2, 4 with rewards 0, -1, -1; column 3 (the user's reply) carries no action
    rewards = torch.tensor([[0.0, 0.0, -1.0, 5.0, -1.0]])
    action_mask = torch.tensor([[0, 1, 1, 0, 1]])
    assert monte_carlo_returns(rewards, action_mask, 1.0).tolist() == [[0.0, -2.0, -2.0, 0.0, -1.0]]
    # the undiscounted shortcut agrees with the per-token recursion as gamma -> 1
    assert torch.allclose(monte_carlo_returns(rewards, action_mask, 1.0), monte_carlo_returns(rewards, action_mask, 1 - 1e-7), atol=1e-5)
    assert monte_carlo_returns(rewards, action_mask, 0.5).tolist() == [[0.0, -0.75, -1.5, 0.0, -1.0]]


def test_dataset_hidden_reads_rows_of_any_length_like_the_trunk_does():
    from seqrl.models import GPT, GPTConfig
    from seqrl.offline import ILQL, TwoStepToy, dataset_hidden

    toy = TwoStepToy()
    data = toy.dataset(40, seed=0)
    data.mask[::3, 7:] = 0  # cut every third row after 7 tokens: rows of two lengths
    data.action_mask *= data.mask
    torch.manual_seed(0)
    trunk = GPT(GPTConfig(vocab_size=toy.tokenizer().vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    hidden = dataset_hidden(ILQL(trunk, train_trunk=False), data, chunk=8)
    with torch.no_grad():
        direct = trunk(data.tokens).hidden  # causal: a real column never reads the columns after it
    real = data.mask.bool()
    assert torch.allclose(hidden[real], direct[real], atol=1e-5)
    assert hidden[~real].abs().sum() == 0
