"""Plots and an interactive explorer for the Tiger problem (chapter 01).

* :func:`plot_value_function`: the alpha vectors, their upper envelope :math:`V^*(b)` and the
  belief thresholds of the optimal policy.
* :func:`plot_policy_values`: the value of the best policy in each policy class (the chapter's key
  figure: what memory is worth).
* :func:`plot_belief_trajectory`: the belief along one episode, with the hidden tiger and the actions.
* :class:`TigerGame`: the pure logic of a game played by hand (Bayes filter, rewards, :math:`V^*(b)`
  and the optimal action at the current belief), testable without a browser;
  :func:`status_html` renders its state; :class:`TigerExplorer` puts buttons around it (ipywidgets).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ..pomdp import (
    LISTEN,
    OPEN_LEFT,
    OPEN_RIGHT,
    TIGER_LEFT,
    AlphaVectorSolution,
    BeliefThresholds,
    GridSolution,
    TigerEnv,
    TigerPOMDP,
    belief_update,
    solve_alpha_vectors,
)
from .style import PALETTE

__all__ = [
    "ACTION_COLORS",
    "plot_value_function",
    "plot_policy_values",
    "plot_belief_trajectory",
    "TigerStep",
    "TigerGame",
    "status_html",
    "TigerExplorer",
]

ACTION_COLORS = {LISTEN: PALETTE[0], OPEN_LEFT: PALETTE[1], OPEN_RIGHT: PALETTE[2]}
_BELIEF_LABEL = "belief p = b(tiger-left)"
_VALUE_LABEL = "value (expected discounted reward)"


# ----------------------------------------------------------------------------------------------
# static plots


def plot_value_function(
    solution: AlphaVectorSolution,
    grid_solution: GridSolution | None = None,
    model: TigerPOMDP | None = None,
    ax=None,
    title: str = "The optimal value of the Tiger problem is piecewise linear and convex",
):
    r"""The alpha vectors :math:`p \mapsto \alpha \cdot (p, 1-p)` (thin, coloured by their first
    action), their upper envelope :math:`V^*(p)` (black), the thresholds of the optimal policy
    (dashed), and optionally the grid solver's values (dots)."""
    model = model if model is not None else TigerPOMDP()
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 4.0))
    p = np.linspace(0.0, 1.0, 401)
    labelled: set[int] = set()
    for alpha, action in zip(solution.alphas, solution.actions):
        label = None if action in labelled else f"alpha vectors starting with {model.action_names[action]}"
        labelled.add(int(action))
        ax.plot(p, alpha[0] * p + alpha[1] * (1 - p), color=ACTION_COLORS[int(action)], linewidth=1.0, alpha=0.6, label=label)
    values = solution.value(p)
    ax.plot(p, values, color="black", linewidth=2.4, label="V*(b): their upper envelope")
    if grid_solution is not None:
        every = max(1, len(grid_solution.grid) // 40)
        ax.plot(grid_solution.grid[::every], grid_solution.values[::every], "o", color=PALETTE[3], markersize=3.5,
                label=f"grid solver ({len(grid_solution.grid)} beliefs)")
    span = float(values.max() - values.min())
    ax.set_ylim(values.min() - 0.7 * span, values.max() + 0.3 * span)
    thresholds = solution.thresholds
    for x, text, side in ((thresholds.lower, "open-left below", "left"), (thresholds.upper, "open-right above", "right")):
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"{text}\np = {x:.3f}", (x, values.min() - 0.6 * span), xytext=(4 if side == "left" else -4, 0),
                    textcoords="offset points", ha=side, fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9})
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(_BELIEF_LABEL)
    ax.set_ylabel(_VALUE_LABEL)
    ax.set_title(title)
    ax.legend(loc="upper center", fontsize=8, ncol=2)
    return ax


def plot_policy_values(
    values: Mapping[str, float],
    optimum: float | None = None,
    simulated: Mapping[str, tuple[float, float]] | None = None,
    ax=None,
    title: str = "What memory is worth in the Tiger problem",
):
    """Bars of exact values by policy class, optional simulated means with 3-standard-error bars,
    and a dashed line at the optimum.

    Args:
        values: ``{class name: exact value from b0}``, in the order to draw.
        optimum: :math:`V^*(b_0)`, drawn as a horizontal line.
        simulated: ``{class name: (mean return, standard error)}`` for some of the classes.
    """
    if not values:
        raise ValueError("values must name at least one policy class")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.8))
    names = list(values)
    heights = np.array([values[name] for name in names], dtype=float)
    positions = np.arange(len(names))
    colours = [PALETTE[2] if optimum is not None and abs(h - optimum) < 1e-9 else PALETTE[0] for h in heights]
    ax.bar(positions, heights, color=colours, width=0.6, label="exact value of the best policy in the class")
    span = float(max(heights.max(), 0.0) - min(heights.min(), 0.0))
    for x, h in zip(positions, heights):
        if abs(h) > 0.15 * span:  # inside the bar, clear of the error bars at its top
            ax.text(x, h / 2, f"{h:.2f}", ha="center", va="center", color="white", fontweight="bold", fontsize=9)
        else:
            ax.annotate(f"{h:.2f}", (x, h), xytext=(0, 3 if h >= 0 else -11), textcoords="offset points", ha="center", fontsize=9)
    if simulated:
        xs = [positions[names.index(name)] for name in simulated]
        means = [mean for mean, _ in simulated.values()]
        errors = [3 * se for _, se in simulated.values()]
        ax.errorbar(xs, means, yerr=errors, fmt="o", color="black", markersize=4, capsize=4,
                    label="simulated mean return ± 3 s.e.")
    if optimum is not None:
        ax.axhline(optimum, color=PALETTE[2], linestyle="--", linewidth=1, label=f"V*(b0) = {optimum:.2f}")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(positions, names)
    ax.set_ylim(min(heights.min(), 0.0) - 0.12 * span, max(heights.max(), 0.0) + 0.3 * span)
    ax.set_xlabel("policy class (what the policy remembers)")
    ax.set_ylabel("value from b0 = (½, ½)\n(expected discounted reward)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_belief_trajectory(history: Sequence[TigerStep], thresholds: BeliefThresholds, ax=None,
                           title: str = "The belief along one episode of the optimal policy"):
    """The belief :math:`p_t` before each action (markers coloured by the action taken), the regions
    where the thresholds open a door (shaded), the hidden tiger (crosses at the top when it is
    left, at the bottom when it is right) and the rewards of the doors opened."""
    if not history:
        raise ValueError("history is empty: play at least one step")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.6))
    steps = np.array([step.t for step in history])
    beliefs = np.array([step.belief for step in history])
    ax.axhspan(thresholds.upper, 1.08, color=ACTION_COLORS[OPEN_RIGHT], alpha=0.1, linewidth=0)
    ax.axhspan(-0.08, thresholds.lower, color=ACTION_COLORS[OPEN_LEFT], alpha=0.1, linewidth=0)
    ax.plot(steps, beliefs, color="grey", linewidth=1, zorder=1)
    names = TigerPOMDP().action_names
    for action, colour in ACTION_COLORS.items():
        chosen = np.array([step.action == action for step in history])
        if chosen.any():
            ax.scatter(steps[chosen], beliefs[chosen], color=colour, s=22, zorder=2, label=f"then {names[action]}")
    tiger_y = np.array([1.05 if step.tiger == TIGER_LEFT else -0.05 for step in history])
    ax.scatter(steps, tiger_y, marker="x", color="black", s=14, linewidth=0.8, label="hidden tiger (top = left)")
    for step in history:
        if step.action != LISTEN:
            ax.annotate(f"{step.reward:+.0f}", (step.t, step.belief), xytext=(4, -12 if step.belief > 0.5 else 6),
                        textcoords="offset points", fontsize=8)
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlabel("time step t")
    ax.set_ylabel(_BELIEF_LABEL)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return ax


# ----------------------------------------------------------------------------------------------
# a game played by hand: the pure logic


@dataclass(frozen=True)
class TigerStep:
    """One step of a :class:`TigerGame`.

    Attributes:
        t: the step index.
        belief: :math:`p_t = b_t(\\text{tiger-left})` when the action was chosen.
        tiger: the hidden state when the action was taken (it decides the reward).
        action, reward: the action and the reward it earned.
        observation: what the agent observed after it.
        next_belief: :math:`p_{t+1}`, the Bayes filter's update.
    """

    t: int
    belief: float
    tiger: int
    action: int
    reward: float
    observation: int
    next_belief: float


class TigerGame:
    """The Tiger problem played one action at a time, with the belief kept by the Bayes filter.

    The dynamics are :class:`~seqrl.pomdp.TigerEnv`'s (with the hidden state revealed to the game,
    never used for the belief); the belief is :func:`~seqrl.pomdp.belief_update`'s; the value and the
    optimal action at the current belief come from an exact solution.

    Args:
        solution: the exact solution (default: solved here, about half a second).
        model: the Tiger POMDP (default: the standard numbers).
        seed: seeds the game; :meth:`reset` without a seed continues the same random stream.
    """

    def __init__(self, solution: AlphaVectorSolution | None = None, model: TigerPOMDP | None = None, seed: int = 0) -> None:
        self.model = model if model is not None else TigerPOMDP()
        if not isinstance(self.model, TigerPOMDP):
            raise TypeError(f"model must be a TigerPOMDP, got {type(self.model).__name__}")
        self.solution = solution if solution is not None else solve_alpha_vectors(self.model)
        self._env = TigerEnv(self.model, max_steps=2**62, reveal_state=True)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Start a new game: the tiger is placed at random, the belief is :math:`b_0`."""
        _, info = self._env.reset(seed=seed)
        self.tiger: int = int(info["state"])
        self.belief: np.ndarray = self.model.initial_belief.copy()  # (2,)
        self.history: list[TigerStep] = []
        self.total_reward = 0.0
        self.discounted_return = 0.0

    @property
    def p(self) -> float:
        """The current belief that the tiger is left, :math:`p = b(\\text{tiger-left})`."""
        return float(self.belief[TIGER_LEFT])

    @property
    def value(self) -> float:
        """:math:`V^*(b)` at the current belief."""
        return float(self.solution.value(self.p))

    @property
    def best_action(self) -> int:
        """The optimal action at the current belief."""
        return int(self.solution.greedy_actions(self.p))

    def step(self, action: int) -> TigerStep:
        """Take ``action``, observe, update the belief; returns (and records) the :class:`TigerStep`."""
        if isinstance(action, bool) or not isinstance(action, (int, np.integer)) or not 0 <= action < self.model.n_actions:
            raise ValueError(f"action must be one of {list(range(self.model.n_actions))} {self.model.action_names}, got {action!r}")
        action = int(action)
        before, tiger = self.p, self.tiger
        observation, reward, _, _, info = self._env.step(action)
        self.belief = belief_update(self.belief, action, observation, self.model)
        self.tiger = int(info["state"])
        self.discounted_return += self.model.discount ** len(self.history) * reward
        self.total_reward += reward
        record = TigerStep(len(self.history), before, tiger, action, float(reward), int(observation), self.p)
        self.history.append(record)
        return record


def status_html(game: TigerGame, reveal: bool = False, last: int = 6) -> str:
    """The state of ``game`` as HTML: the belief as two bars, the tiger (only when ``reveal``),
    the rewards so far, :math:`V^*(b)` with the optimal action, and the ``last`` steps."""
    names = game.model.action_names
    p = game.p
    bar = (
        '<div style="display:flex;width:320px;height:18px;border:1px solid #999">'
        f'<div style="width:{100 * p:.1f}%;background:{PALETTE[1]}"></div>'
        f'<div style="width:{100 * (1 - p):.1f}%;background:{PALETTE[2]}"></div></div>'
    )
    door = "LEFT" if game.tiger == TIGER_LEFT else "RIGHT"
    tiger = f"behind the <b>{door}</b> door" if reveal else "hidden (tick 'reveal the tiger' to peek)"
    lines = [
        f"<b>belief</b>: P(tiger left) = {p:.3f}, P(tiger right) = {1 - p:.3f}",
        bar,
        f"<b>tiger</b>: {tiger}",
        f"<b>steps</b>: {len(game.history)} &nbsp; <b>reward so far</b>: {game.total_reward:+.0f} "
        f"(discounted: {game.discounted_return:+.2f})",
        f"<b>V*(b)</b> = {game.value:.2f} &nbsp; <b>optimal action here</b>: {names[game.best_action]}",
    ]
    for step in game.history[-last:][::-1]:
        heard = game.model.observation_names[step.observation]
        lines.append(
            f"<span style='color:#555'>t={step.t}: p={step.belief:.3f}, {names[step.action]} → {heard}, "
            f"reward {step.reward:+.0f}</span>"
        )
    return "<div style='font-family:sans-serif;line-height:1.5'>" + "<br>".join(lines) + "</div>"


# ----------------------------------------------------------------------------------------------
# the widget


class TigerExplorer:
    """Buttons *listen / open left / open right / new game* and a *reveal the tiger* box around a
    :class:`TigerGame`; display it by leaving it as the last expression of a notebook cell.

    The buttons only call :meth:`press`, so every behaviour is testable without a browser.
    """

    def __init__(self, solution: AlphaVectorSolution | None = None, model: TigerPOMDP | None = None, seed: int = 0) -> None:
        import ipywidgets as widgets  # imported here: the plots above do not need it

        self.game = TigerGame(solution, model, seed)
        labels = {LISTEN: "listen (−1)", OPEN_LEFT: "open left door", OPEN_RIGHT: "open right door"}
        self.buttons: dict[int, Any] = {}
        for action, label in labels.items():
            button = widgets.Button(description=label, layout=widgets.Layout(width="140px"))
            button.on_click(lambda _, action=action: self.press(action))
            self.buttons[action] = button
        self.new_game = widgets.Button(description="new game", button_style="warning")
        self.new_game.on_click(lambda _: self.restart())
        self.reveal = widgets.Checkbox(value=False, description="reveal the tiger", indent=False)
        self.reveal.observe(lambda _: self.refresh(), names="value")
        self.status = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([*self.buttons.values(), self.new_game]), self.reveal, self.status])
        self.refresh()

    def press(self, action: int) -> TigerStep:
        """Play ``action`` and redraw."""
        step = self.game.step(action)
        self.refresh()
        return step

    def restart(self) -> None:
        """A new game (the random stream continues, so the tiger is placed afresh)."""
        self.game.reset()
        self.refresh()

    def refresh(self) -> None:
        self.status.value = status_html(self.game, self.reveal.value)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
