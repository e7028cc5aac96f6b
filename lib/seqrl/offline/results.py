r"""Evaluating offline-RL agents over several seeds and normalising their scores as LMRL-Gym does.

LMRL-Gym (Abdulhai et al. 2023) reports, per task and method, the mean return rescaled so that the
worst reference policy scores 0 and the best scores 100:

.. math:: \text{score} = 100\,\frac{R - R_{\text{low}}}{R_{\text{high}} - R_{\text{low}}},

here with :math:`R_{\text{low}}` the random behaviour policy and :math:`R_{\text{high}}` the best
behaviour policy in the data. Above 100 means better than every policy that wrote the data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

__all__ = ["Evaluation", "evaluate", "evaluate_runs", "normalised_score", "results_table"]


@dataclass
class Evaluation:
    """Returns and success rates of one method, one entry per run: an evaluation seed of one agent
    (:func:`evaluate`) or one agent per training seed (:func:`evaluate_runs`)."""

    returns: list[float]  # mean return of the games of each run
    successes: list[float]  # success rate of each run
    dialogues: list[str]  # the games of the first run, for reading

    @property
    def mean_return(self) -> float:
        return sum(self.returns) / len(self.returns)

    @property
    def spread(self) -> float:
        """Seed-to-seed spread: the range (max - min) of the per-run mean returns."""
        return max(self.returns) - min(self.returns)

    @property
    def success(self) -> float:
        return sum(self.successes) / len(self.successes)

    def beats(self, other: "Evaluation") -> bool:
        r"""Whether this method's mean return exceeds ``other``'s by more than the seed-to-seed
        spread of either: :math:`\bar R_a - \bar R_b > \max(\text{spread}_a, \text{spread}_b)`."""
        return self.mean_return - other.mean_return > max(self.spread, other.spread)


def evaluate(task: Any, agent: Any, seeds: Sequence[int], n_episodes: int, **play_kwargs) -> Evaluation:
    """Play ``n_episodes`` games of ``task`` per seed (``task.play(agent, n_episodes, seed)``)."""
    if not seeds or n_episodes < 1:
        raise ValueError(f"need at least one seed and one episode, got seeds={list(seeds)} and n_episodes={n_episodes}")
    returns, successes, dialogues = [], [], []
    for seed in seeds:
        result = task.play(agent, n_episodes, seed=seed, **play_kwargs)
        returns.append(float(result["return"].float().mean()))
        successes.append(float(torch.as_tensor(result["success"]).float().mean()))
        dialogues = dialogues or list(result["dialogues"])
    return Evaluation(returns, successes, dialogues)


def evaluate_runs(task: Any, agents: Sequence[Any], n_episodes: int, seed: int = 0, **play_kwargs) -> Evaluation:
    """One entry per agent (e.g. one per training seed of a method), every agent playing the same
    ``n_episodes`` games (the same secrets and sampling seed ``seed``): the spread of the result is
    then the training seeds' spread."""
    if not agents or n_episodes < 1:
        raise ValueError(f"need at least one agent and one episode, got {len(agents)} agents and n_episodes={n_episodes}")
    runs = [evaluate(task, agent, (seed,), n_episodes, **play_kwargs) for agent in agents]
    return Evaluation([r.returns[0] for r in runs], [r.successes[0] for r in runs], runs[0].dialogues)


def results_table(results: dict[str, Evaluation], low: float, high: float) -> list[dict[str, Any]]:
    r"""LMRL-Gym's table for one task: per method its mean return, spread, success rate and
    :func:`normalised_score` (``low``: the random behaviour's return, ``high``: the best behaviour's).

    Returns one row per method, ``{"method", "return", "spread", "success", "score", "runs"}`` (``runs``:
    the mean return of each run), in the order of ``results``.
    """
    return [{"method": name, "return": ev.mean_return, "spread": ev.spread, "success": ev.success,
             "score": normalised_score(ev.mean_return, low, high), "runs": list(ev.returns)} for name, ev in results.items()]


def normalised_score(value: float, low: float, high: float) -> float:
    """``100 * (value - low) / (high - low)``: 0 at the random policy, 100 at the best behaviour."""
    if high == low:
        raise ValueError(f"the reference returns must differ, got low = high = {low}")
    return 100.0 * (value - low) / (high - low)
