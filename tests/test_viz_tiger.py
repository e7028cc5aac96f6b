"""The Tiger explorer's logic (no browser needed) and the chapter-01 plots."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from seqrl.pomdp import (
    HEAR_LEFT,
    LISTEN,
    OPEN_LEFT,
    OPEN_RIGHT,
    RESET,
    TIGER_LEFT,
    TigerPOMDP,
    belief_update,
    solve_alpha_vectors,
    solve_belief_grid,
)
from seqrl.viz.tiger import (
    TigerExplorer,
    TigerGame,
    plot_belief_trajectory,
    plot_policy_values,
    plot_value_function,
    status_html,
)

V_STAR_UNIFORM = 19.3713674


@pytest.fixture(scope="module")
def model() -> TigerPOMDP:
    return TigerPOMDP()


@pytest.fixture(scope="module")
def exact(model):
    return solve_alpha_vectors(model)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_a_new_game_starts_uncertain_with_the_optimal_value(exact):
    game = TigerGame(exact, seed=0)
    assert game.p == 0.5 and game.history == [] and game.total_reward == 0.0
    assert game.value == pytest.approx(V_STAR_UNIFORM, abs=1e-5)
    assert game.best_action == LISTEN


def test_listening_costs_one_and_moves_the_belief_by_bayes_rule(exact, model):
    game = TigerGame(exact, seed=1)
    step = game.step(LISTEN)
    assert step.reward == -1.0 and step.belief == 0.5 and step.t == 0
    assert step.next_belief == pytest.approx(0.85 if step.observation == HEAR_LEFT else 0.15)
    before = game.belief.copy()
    step = game.step(LISTEN)
    np.testing.assert_allclose(game.belief, belief_update(before, LISTEN, step.observation, model))
    assert game.total_reward == -2.0 and game.discounted_return == pytest.approx(-1.0 - model.discount)


def test_opening_pays_by_the_hidden_tiger_and_resets_the_belief(exact):
    game = TigerGame(exact, seed=2)
    for _ in range(20):
        game.step(LISTEN)
    for door in (OPEN_LEFT, OPEN_RIGHT, OPEN_LEFT):
        tiger = game.tiger
        step = game.step(door)
        eaten = (door == OPEN_LEFT) == (tiger == TIGER_LEFT)
        assert step.tiger == tiger and step.reward == (-100.0 if eaten else 10.0)
        assert step.observation == RESET and game.p == 0.5


def test_the_optimal_action_follows_the_thresholds(exact):
    game = TigerGame(exact, seed=3)
    thresholds = exact.thresholds
    seen = set()
    for _ in range(200):
        expected = OPEN_RIGHT if game.p > thresholds.upper else OPEN_LEFT if game.p < thresholds.lower else LISTEN
        assert game.best_action == expected
        seen.add(expected)
        game.step(game.best_action)
    assert seen == {LISTEN, OPEN_LEFT, OPEN_RIGHT}
    assert game.total_reward > 0  # the optimal policy earns on average


def test_games_are_reproducible_from_the_seed_and_reset_starts_afresh(exact):
    first, second = TigerGame(exact, seed=7), TigerGame(exact, seed=7)
    for _ in range(15):
        assert first.step(LISTEN) == second.step(LISTEN)
    first.reset()
    assert first.history == [] and first.p == 0.5 and first.discounted_return == 0.0


@pytest.mark.parametrize("action", [3, -1, 1.0, True, "listen"])
def test_a_bad_action_is_rejected(exact, action):
    with pytest.raises(ValueError, match="action must be one of"):
        TigerGame(exact).step(action)


def test_the_status_hides_the_tiger_unless_revealed(exact):
    game = TigerGame(exact, seed=4)
    game.step(LISTEN)
    door = "LEFT" if game.tiger == TIGER_LEFT else "RIGHT"
    hidden, shown = status_html(game, reveal=False), status_html(game, reveal=True)
    assert door not in hidden and "hidden" in hidden and f"<b>{door}</b>" in shown
    assert f"{game.value:.2f}" in hidden and "optimal action here" in hidden
    assert f"P(tiger left) = {game.p:.3f}" in hidden and "reward so far</b>: -1" in hidden


def test_the_explorer_buttons_drive_the_game(exact):
    explorer = TigerExplorer(exact, seed=5)
    explorer.buttons[LISTEN].click()
    explorer.buttons[LISTEN].click()
    assert len(explorer.game.history) == 2 and "t=1" in explorer.status.value
    assert "hidden" in explorer.status.value
    explorer.reveal.value = True
    assert "behind the" in explorer.status.value
    explorer.buttons[OPEN_RIGHT].click()
    assert explorer.game.history[-1].action == OPEN_RIGHT and explorer.game.p == 0.5
    explorer.new_game.click()
    assert explorer.game.history == [] and "steps</b>: 0" in explorer.status.value
    assert "application/vnd.jupyter.widget-view+json" in explorer._repr_mimebundle_()


def _assert_labelled(ax):
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert ax.get_legend() is not None


def test_value_function_plot_shows_alpha_vectors_envelope_and_thresholds(exact, model):
    ax = plot_value_function(exact, solve_belief_grid(model, n_points=101))
    _assert_labelled(ax)
    assert "belief" in ax.get_xlabel() and "value" in ax.get_ylabel()
    assert len(ax.get_lines()) >= len(exact.alphas) + 1 + 2  # the vectors, V*, the grid, two thresholds
    assert f"{exact.thresholds.lower:.3f}" in " ".join(text.get_text() for text in ax.texts)


def test_policy_value_bars_have_one_bar_per_class():
    values = {"memoryless": -20.0, "last 2": 12.04, "belief": 19.37}
    ax = plot_policy_values(values, optimum=19.37, simulated={"belief": (19.5, 0.2)})
    _assert_labelled(ax)
    assert len(ax.patches) == 3 and [tick.get_text() for tick in ax.get_xticklabels()] == list(values)
    with pytest.raises(ValueError, match="at least one"):
        plot_policy_values({})


def test_belief_trajectory_plot(exact):
    game = TigerGame(exact, seed=6)
    for _ in range(30):
        game.step(game.best_action)
    ax = plot_belief_trajectory(game.history, exact.thresholds)
    _assert_labelled(ax)
    assert ax.get_xlabel() == "time step t"
    with pytest.raises(ValueError, match="empty"):
        plot_belief_trajectory([], exact.thresholds)
