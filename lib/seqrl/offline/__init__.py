"""Offline RL on logged dialogues: behaviour cloning, filtered BC and ILQL (Part 3 of the book).

The same GPT trunk as everywhere else reads the dialogues; :mod:`.objectives` holds ILQL's pieces
as pure functions (expectile loss, TD targets across turns, CQL penalty, policy extraction),
:mod:`.ilql` the model and its training loop, :mod:`.bc` (filtered) behaviour cloning,
:mod:`.agents` the policies the games' evaluator plays, :mod:`.results` the LMRL-Gym-style table,
and :mod:`.toy` a two-turn dialogue whose optimal Q-values are known by hand.
"""
from ..models.heads import ILQLHeads, ILQLValues, QHead
from .agents import ILQLAgent, LMAgent, UtteranceAgent
from .bc import bc_loss, train_bc
from .data import Batch, check_offline_dataset, filter_composition, opening_utterances, sample_batch, top_fraction, top_fraction_rows
from .ilql import ILQL, dataset_hidden, decision_states, warm_start_ilql, ILQLConfig, ILQLHistory, ILQLOutput, ILQLStats, ilql_loss, train_ilql, train_ilql_heads, warm_start_loss
from .objectives import (
    cql_penalty,
    expectile_loss,
    monte_carlo_returns,
    next_action_index,
    perturbed_logits,
    state_values_before_actions,
    taken_action_values,
    td_targets,
)
from .results import Evaluation, evaluate, evaluate_runs, normalised_score, results_table
from .toy import TwoStepToy, expectile
from . import recipes as _recipes  # noqa: F401  (registers the BC and filtered-BC checkpoints of chapter 08)

__all__ = [
    "Evaluation",
    "evaluate",
    "evaluate_runs",
    "filter_composition",
    "normalised_score",
    "opening_utterances",
    "results_table",
    "top_fraction_rows",
    "Batch",
    "ILQL",
    "ILQLAgent",
    "ILQLConfig",
    "ILQLHeads",
    "ILQLHistory",
    "ILQLOutput",
    "ILQLStats",
    "ILQLValues",
    "LMAgent",
    "QHead",
    "TwoStepToy",
    "UtteranceAgent",
    "bc_loss",
    "check_offline_dataset",
    "cql_penalty",
    "dataset_hidden",
    "decision_states",
    "warm_start_ilql",
    "expectile",
    "expectile_loss",
    "ilql_loss",
    "monte_carlo_returns",
    "next_action_index",
    "perturbed_logits",
    "sample_batch",
    "state_values_before_actions",
    "taken_action_values",
    "td_targets",
    "top_fraction",
    "train_bc",
    "train_ilql",
    "train_ilql_heads",
    "warm_start_loss",
]
