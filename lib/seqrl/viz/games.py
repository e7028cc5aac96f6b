"""Plots and a playable widget for the multi-turn language games (chapter 07).

* :func:`plot_return_histograms`: the return distribution of each behaviour policy in a logged dataset.
* :func:`plot_time_steps`: one dialogue drawn token by token, with the Bellman backups of the
  per-token and the per-utterance views (where the backup jumps over the user's reply).
* :func:`plot_policy_returns`: mean return per policy and task, with the theory's optimum.
* :class:`DialogueGame`: a game played by hand against the oracle, the pure logic (the consistent
  candidates, the expert's suggestion), testable without a browser; :func:`game_html` renders it;
  :class:`GameExplorer` puts a text box and buttons around it (ipywidgets).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ..games.dataset import OfflineDataset
from ..games.task import DialogueTask, Turn
from .style import PALETTE

__all__ = ["BEHAVIOUR_COLORS", "plot_return_histograms", "plot_time_steps", "plot_policy_returns", "DialogueGame",
           "game_html", "GameExplorer"]

BEHAVIOUR_COLORS = {"random": PALETTE[1], "guesser": PALETTE[3], "noisy": PALETTE[4], "expert": PALETTE[2]}


def plot_return_histograms(dataset: OfflineDataset, ax=None, title: str = "Returns in the logged dialogues"):
    """Side-by-side bars of the return distribution (fraction of episodes per return) of each behaviour."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 3.6))
    present = set(dataset.behaviour)
    names = [b for b in BEHAVIOUR_COLORS if b in present] + sorted(present - set(BEHAVIOUR_COLORS))
    returns = dataset.returns.numpy()
    values = np.arange(int(returns.min()), int(returns.max()) + 1)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        mine = returns[[b == name for b in dataset.behaviour]]
        fractions = np.array([(mine == v).mean() for v in values])
        ax.bar(values + (k - (len(names) - 1) / 2) * width, fractions, width=width, color=BEHAVIOUR_COLORS.get(name, PALETTE[k]),
               label=f"{name} (mean {mine.mean():.2f}, n={len(mine)})")
    ax.set_xticks(values)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend
    ax.set_xlabel("return (−1 per turn)")
    ax.set_ylabel("fraction of the policy's episodes")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    return ax


def plot_time_steps(task: DialogueTask, turns: Sequence[Turn], ax=None,
                    title: str = "Where the Bellman backup goes: per token and per utterance"):
    """One dialogue as a row of tokens (agent tokens blue, the engine's and the user's grey), with
    the backups :math:`Q(h_t, a_t) \\leftarrow r_t + V(h_{t+1})` of the per-token view above (arrow
    from each agent token to the next agent token, jumping over the user's reply after ``<sep>``)
    and of the per-utterance view below (one arrow per turn)."""
    if not turns:
        raise ValueError("draw at least one turn")
    tok = task.tokenizer()
    words = tok.decode(tok.encode(task.render(turns))).split()
    agent_ids: set[int] = set()  # the agent writes the words after <agent>, up to and including <sep>
    turn_spans: list[tuple[int, int]] = []
    writing, start = False, 0
    for i, word in enumerate(words):
        if word == "<agent>":
            writing, start = True, i + 1
        elif writing:
            agent_ids.add(i)
            if word == "<sep>":
                writing = False
                turn_spans.append((start, i))
    if ax is None:
        _, ax = plt.subplots(figsize=(min(2 + 0.42 * len(words), 16), 3.2))
    for i, word in enumerate(words):
        colour = PALETTE[0] if i in agent_ids else "#BBBBBB"
        ax.add_patch(plt.Rectangle((i - 0.45, -0.3), 0.9, 0.6, color=colour, alpha=0.85 if i in agent_ids else 0.5))
        ax.text(i, 0, word.replace("<", "‹").replace(">", "›"), rotation=90, ha="center", va="center", fontsize=7,
                color="white" if i in agent_ids else "black")
    agent_sorted = sorted(agent_ids)
    for a, b in zip(agent_sorted, agent_sorted[1:]):
        crosses = b - a > 1
        ax.annotate("", xy=(b, 0.32), xytext=(a, 0.32),
                    arrowprops={"arrowstyle": "->", "color": PALETTE[1] if crosses else PALETTE[0], "lw": 1.4 if crosses else 0.8,
                                "connectionstyle": f"arc3,rad={-0.5 if crosses else -0.6}"})
    for (s0, e0), (s1, e1) in zip(turn_spans, turn_spans[1:]):
        ax.annotate("", xy=((s1 + e1) / 2, -0.32), xytext=((s0 + e0) / 2, -0.32),
                    arrowprops={"arrowstyle": "->", "color": PALETTE[2], "lw": 1.4, "connectionstyle": "arc3,rad=0.35"})
    for s, e in turn_spans:
        ax.plot([s - 0.45, e + 0.45], [-0.38, -0.38], color=PALETTE[2], lw=3)
    ax.plot([], [], color=PALETTE[0], label="per token: backup to the next agent token")
    ax.plot([], [], color=PALETTE[1], lw=1.4, label="per token: the backup after ‹sep› jumps over the user's reply")
    ax.plot([], [], color=PALETTE[2], lw=1.4, label="per utterance: one action (green bar) per turn, one backup per turn")
    ax.set_xlim(-1, len(words))
    ax.set_ylim(-1.25, 1.25)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_xlabel("token position t in the dialogue")
    ax.grid(False)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1)
    return ax


def plot_policy_returns(results: Mapping[str, Mapping[str, tuple[float, float]]], optimum: Mapping[str, float] | None = None,
                        ax=None, title: str = "Mean return of each policy, evaluated with play()"):
    """Mean return per policy, grouped by task: ``results[task][policy] = (mean return, standard error)``,
    drawn as dots with 2-standard-error bars; dashed lines mark ``optimum[task]`` (the theory's optimum)."""
    if not results:
        raise ValueError("results must name at least one task")
    if ax is None:
        _, ax = plt.subplots(figsize=(8.0, 3.8))
    tasks = list(results)
    policies = list(dict.fromkeys(p for r in results.values() for p in r))
    width = 0.8 / len(policies)
    others = iter(c for c in (PALETTE[0], PALETTE[7], PALETTE[5], PALETTE[3]) if c not in BEHAVIOUR_COLORS.values())
    colours = {p: BEHAVIOUR_COLORS.get(p) or next(others, PALETTE[0]) for p in policies}
    markers = dict(zip(policies, "osD^vPX*"))
    for k, policy in enumerate(policies):
        xs = [i + (k - (len(policies) - 1) / 2) * width for i, t in enumerate(tasks) if policy in results[t]]
        means = [results[t][policy][0] for t in tasks if policy in results[t]]
        errors = [2 * results[t][policy][1] for t in tasks if policy in results[t]]
        ax.errorbar(xs, means, yerr=errors, fmt=markers[policy], color=colours[policy], capsize=3, markersize=7, label=policy)
    for i, t in enumerate(tasks):
        if optimum and t in optimum:
            ax.hlines(optimum[t], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1,
                      label="theory: optimal policy" if i == 0 else None)
    ax.set_xticks(range(len(tasks)), [t.replace("_", " ") for t in tasks])
    ax.set_xlim(-0.5, len(tasks) - 0.5)
    ax.set_xlabel("task")
    ax.set_ylabel("mean return (−turns)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


# ----------------------------------------------------------------------------------------------
# a game played by hand: the pure logic


class DialogueGame:
    """One game of ``task`` against the oracle, played an utterance at a time.

    Args:
        task: the game.
        seed: draws the secret (``task.sample_secrets(1, seed)``); :meth:`reset` draws a new one.
    """

    def __init__(self, task: DialogueTask, seed: int = 0) -> None:
        self.task = task
        self._seed = int(seed)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """A new game with a new secret (the next seed if none is given)."""
        self._seed = self._seed + 1 if seed is None else int(seed)
        self.secret = int(self.task.sample_secrets(1, self._seed)[0])
        self.turns: list[Turn] = []

    @property
    def over(self) -> bool:
        return self.task.is_over(self.turns)

    @property
    def solved(self) -> bool:
        return bool(self.turns) and self.turns[-1].reply == self.task.solved_reply

    @property
    def total_return(self) -> float:
        return -float(len(self.turns))

    def say(self, text: str) -> str:
        """The agent says ``text``; returns the oracle's reply (``pardon ?`` if ill-formed)."""
        if self.over:
            raise ValueError("the game is over: start a new one with reset()")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("say something: an utterance such as 'is it big ?'")
        text = " ".join(text.split())
        u = self.task.utterance_index(text)
        reply = self.task.reply(self.secret, u)
        self.turns.append(Turn(u, reply, text))
        return self.task.reply_text(self.turns[-1])

    def candidates(self) -> list[str]:
        """The secrets still consistent with the replies (the support of the belief)."""
        return [self.task.secrets[s] for s in np.flatnonzero(self.task.consistent(self.turns))]

    def suggestion(self) -> str:
        """What the expert (the most informative utterance) would say now."""
        from ..games.policies import ExpertPolicy

        return self.task.utterances[ExpertPolicy(self.task).choose(self.turns)]

    def transcript(self) -> str:
        return self.task.render(self.turns, finished=self.over)


def game_html(game: DialogueGame, reveal: bool = False) -> str:
    """The game as HTML: the dialogue so far, the return, the candidates left and (if ``reveal``) the secret."""
    rows = []
    for k, turn in enumerate(game.turns, start=1):
        rows.append(f"<b>{k}. agent</b>: {game.task.utterance_text(turn)} &nbsp;→&nbsp; <b>user</b>: {game.task.reply_text(turn)}")
    if game.over:
        rows.append(f"<b>{'solved' if game.solved else 'turn limit reached'}</b> with return {game.total_return:+.0f}")
    else:
        rows.append(f"turn {len(game.turns) + 1} of {game.task.turn_limit}; return so far {game.total_return:+.0f}")
    left = game.candidates()
    rows.append(f"<span style='color:#555'>consistent with the replies ({len(left)}): {', '.join(left)}</span>")
    if reveal:
        rows.append(f"<span style='color:#555'>the secret: <b>{game.task.secrets[game.secret]}</b></span>")
    return "<div style='font-family:sans-serif;line-height:1.5'>" + "<br>".join(rows) + "</div>"


class GameExplorer:
    """A text box with the task's utterances as suggestions, *say*, *hint* and *new game* buttons,
    and a *reveal the secret* box around a :class:`DialogueGame`. The buttons only call
    :meth:`say`, :meth:`hint` and :meth:`restart`, so every behaviour is testable without a browser."""

    def __init__(self, task: DialogueTask, seed: int = 0) -> None:
        import ipywidgets as widgets

        self.game = DialogueGame(task, seed)
        self.box = widgets.Combobox(placeholder="is it big ?", options=list(task.utterances), ensure_option=False,
                                    layout=widgets.Layout(width="260px"))
        self.say_button = widgets.Button(description="say", button_style="primary")
        self.say_button.on_click(lambda _: self.say(self.box.value))
        self.hint_button = widgets.Button(description="hint (expert)")
        self.hint_button.on_click(lambda _: self.hint())
        self.new_game = widgets.Button(description="new game", button_style="warning")
        self.new_game.on_click(lambda _: self.restart())
        self.reveal = widgets.Checkbox(value=False, description="reveal the secret", indent=False)
        self.reveal.observe(lambda _: self.refresh(), names="value")
        self.status = widgets.HTML()
        self.widget = widgets.VBox([widgets.HBox([self.box, self.say_button, self.hint_button, self.new_game]), self.reveal, self.status])
        self.refresh()

    def say(self, text: str) -> str | None:
        """Say ``text`` to the oracle (ignored when the game is over or the box is empty); redraw."""
        if self.game.over or not text or not text.strip():
            return None
        reply = self.game.say(text)
        self.box.value = ""
        self.refresh()
        return reply

    def hint(self) -> str:
        """Put the expert's utterance in the box."""
        if not self.game.over:
            self.box.value = self.game.suggestion()
        return self.box.value

    def restart(self) -> None:
        self.game.reset()
        self.refresh()

    def refresh(self) -> None:
        self.status.value = game_html(self.game, self.reveal.value)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
