"""Tests of the chapter-07 plots and the playable game widget (headless)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from seqrl.games import GuessMyNumber, TwentyQuestions, build_dataset, rollout
from seqrl.viz.games import DialogueGame, GameExplorer, game_html, plot_policy_returns, plot_return_histograms, plot_time_steps


def test_following_the_hints_wins_twenty_questions_in_four_or_five_turns():
    game = DialogueGame(TwentyQuestions(), seed=3)
    while not game.over:
        game.say(game.suggestion())
    assert game.solved and len(game.turns) in (4, 5)
    assert game.candidates() == [game.task.secrets[game.secret]]
    with pytest.raises(ValueError, match="over"):
        game.say("is it big ?")


def test_the_candidates_shrink_as_the_oracle_answers():
    game = DialogueGame(GuessMyNumber(), seed=0)
    secret = game.secret + 1
    assert game.say("is it 8 ?") == ("correct !" if secret == 8 else "higher ." if secret > 8 else "lower .")
    assert len(game.candidates()) <= 7 or secret == 8
    assert game.say("what is it") == "pardon ?" or game.over


def test_explorer_buttons_play_the_game_without_a_browser():
    explorer = GameExplorer(TwentyQuestions(), seed=1)
    hint = explorer.hint()
    assert hint in explorer.game.task.utterances
    assert explorer.say(hint) in ("yes .", "no .", "correct !")
    assert "1. agent" in explorer.status.value
    assert explorer.say("") is None
    explorer.restart()
    assert explorer.game.turns == [] and "turn 1 of 8" in explorer.status.value
    explorer.reveal.value = True
    assert "the secret" in explorer.status.value


def test_game_html_reports_the_end_of_the_game():
    game = DialogueGame(TwentyQuestions(), seed=0)
    game.say(f"is it {'an' if game.task.secrets[game.secret][0] in 'aeiou' else 'a'} {game.task.secrets[game.secret]} ?")
    assert game.solved and "solved" in game_html(game)


def test_plots_draw_headless():
    task = TwentyQuestions()
    plot_return_histograms(build_dataset(task, 60, {"random": 1, "expert": 1}, seed=0))
    plot_time_steps(task, rollout(task, task.policy("expert"), 0, np.random.default_rng(0)))
    plot_policy_returns({"twenty_questions": {"random": (-7.0, 0.1), "expert": (-4.5, 0.03)}}, {"twenty_questions": -4.5})
    plt.close("all")
    with pytest.raises(ValueError):
        plot_time_steps(task, [])
