r"""Implicit Language Q-Learning (Snell, Kostrikov, Su, Yang & Levine 2022) at token level.

One GPT trunk reads the dialogue; :class:`~seqrl.models.heads.ILQLHeads` read twin Q-values over
the vocabulary and a state value from its hidden states, and a Polyak-averaged copy of the Q heads
(the *target* network, on the same hidden states) supplies the targets of V. Per minibatch:

.. math::
    \mathcal L_Q &= \mathbb E\big[(Q_1(h_{t-1}, a_t) - y_t)^2 + (Q_2(h_{t-1}, a_t) - y_t)^2\big],
        \qquad y_t = r_t + \gamma (1 - d_t)\, V(h_{t'-1}) \ \text{(detached)}, \\
    \mathcal L_V &= \mathbb E\big[L_\tau\big(\min(\bar Q_1, \bar Q_2)(h_{t-1}, a_t) - V(h_{t-1})\big)\big]
        \qquad \text{(expectile, target heads } \bar Q\text{)}, \\
    \mathcal L &= \mathcal L_Q + \mathcal L_V + \alpha_{\text{CQL}}\,
        \big(\mathcal L_{\text{CQL}}(Q_1) + \mathcal L_{\text{CQL}}(Q_2)\big),

then :math:`\bar\theta \leftarrow (1-\rho)\bar\theta + \rho\,\theta` for the target heads. V never
takes a max over actions: with :math:`\tau > 0.5` the expectile leans towards the better actions
*present in the data*, so the backup improves on the behaviour policy without querying Q on tokens
it never saw (the "implicit" in IQL/ILQL). The policy is extracted afterwards, with the BC model,
by :func:`~seqrl.offline.objectives.perturbed_logits`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.gpt import GPT
from ..models.heads import ILQLHeads
from ..models.optim import adamw, gradient_step, set_learning_rate
from ..utils import evaluating, progress, seed_everything
from ..models.schedules import warmup_cosine
from .data import Batch, batch_at, check_offline_dataset
from .objectives import (
    cql_penalty,
    expectile_loss,
    monte_carlo_returns,
    state_values_before_actions,
    taken_action_values,
    td_targets,
)

__all__ = ["dataset_hidden", "warm_start_ilql", "decision_states", "ILQLConfig", "ILQLOutput", "ILQLStats", "ILQL", "ilql_loss", "warm_start_loss", "train_ilql", "train_ilql_heads", "ILQLHistory"]


@dataclass
class ILQLConfig:
    """ILQL's hyper-parameters (defaults for the book's tiny dialogue tasks)."""

    gamma: float = 1.0  # discount per agent token (episodes are short and end)
    tau: float = 0.8  # expectile of V; 0.5 = the behaviour policy's value (SARSA-like)
    cql_weight: float = 0.1  # alpha_CQL; 0 switches the penalty off
    polyak: float = 0.05  # rho, target-head update rate per step
    steps: int = 400
    warm_start_steps: int = 0  # first fit Q and V to the logged returns (Monte Carlo), then ILQL
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau < 1.0:
            raise ValueError(f"tau must be in (0, 1), got {self.tau}")
        if self.cql_weight < 0:
            raise ValueError(f"cql_weight must be >= 0, got {self.cql_weight}")
        if not 0.0 < self.polyak <= 1.0:
            raise ValueError(f"polyak must be in (0, 1], got {self.polyak}")
        if self.warm_start_steps < 0:
            raise ValueError(f"warm_start_steps must be >= 0, got {self.warm_start_steps}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")


class ILQLOutput(NamedTuple):
    """Every value ILQL reads from a batch ``(B, T)``; Q-values are over the vocabulary ``V``."""

    q1: torch.Tensor  # (B, T, V) online Q heads
    q2: torch.Tensor  # (B, T, V)
    v: torch.Tensor  # (B, T) V(h_t)
    target_q1: torch.Tensor | None  # (B, T, V) Polyak-averaged copies (no gradient); None if not asked for
    target_q2: torch.Tensor | None  # (B, T, V)


class ILQLStats(NamedTuple):
    """Diagnostics of one minibatch (floats)."""

    loss: float
    q_loss: float
    v_loss: float
    cql: float
    q_mean: float  # mean of min(target Q1, Q2) on the data's actions
    v_mean: float  # mean V on the states before actions


class ILQL(nn.Module):
    r"""A GPT trunk with :class:`ILQLHeads` and target Q heads (see the module docstring).

    Args:
        trunk: the GPT that reads the dialogues; it is used, not copied. A copy of the BC model is
            a good start: its hidden states already encode the dialogue.
        width: hidden width of the heads' MLPs (default ``2 * n_embd``).
        train_trunk: fine-tune the trunk with the heads (ILQL as in the paper). ``False`` keeps
            the trunk fixed and trains only the heads on its hidden states: much cheaper (the
            hidden states of a dataset are computed once), and then the trunk may be the BC model
            itself, so one forward pass gives both :math:`\pi_\beta` and Q/V.
    """

    def __init__(self, trunk: GPT, width: int | None = None, train_trunk: bool = True) -> None:
        super().__init__()
        self.trunk = trunk
        self.train_trunk = bool(train_trunk)
        self.heads = ILQLHeads(trunk.config.n_embd, trunk.config.vocab_size, width).to(trunk.device)
        self.target_q1 = copy.deepcopy(self.heads.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.heads.q2).requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.trunk.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The heads' parameters, and the trunk's when ``train_trunk``."""
        params = list(self.heads.parameters())
        return params + list(self.trunk.parameters()) if self.train_trunk else params

    def hidden(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's hidden states ``(B, T, C)`` (without gradient when the trunk is fixed)."""
        with torch.set_grad_enabled(self.train_trunk and torch.is_grad_enabled()):
            return self.trunk(tokens, attention_mask=attention_mask).hidden

    def values(self, hidden: torch.Tensor, where: torch.Tensor | None = None, targets: bool = True) -> ILQLOutput:
        """Q (online and target) and V from hidden states ``(B, T, C)``.

        ``where (B, T)`` bool restricts the heads to those columns (the states in which an agent
        token is chosen, and those bootstrapped from): the other entries of the output are 0. The
        losses only read those columns, and skipping the rest halves the cost. ``targets=False``
        skips the target heads (their fields are then ``None``): the warm start does not read them.
        """
        if where is None:
            q1, q2, v = self.heads(hidden)
            with torch.no_grad():
                target_q1, target_q2 = (self.target_q1(hidden), self.target_q2(hidden)) if targets else (None, None)
            return ILQLOutput(q1, q2, v, target_q1, target_q2)
        picked = hidden[where]  # (N, C)
        q1, q2, v = self.heads(picked)

        def scatter(values: torch.Tensor) -> torch.Tensor:
            grid = values.new_zeros(*where.shape, *values.shape[1:])
            grid[where] = values
            return grid

        if not targets:
            return ILQLOutput(scatter(q1), scatter(q2), scatter(v), None, None)
        with torch.no_grad():
            target_q1, target_q2 = self.target_q1(picked), self.target_q2(picked)
        return ILQLOutput(scatter(q1), scatter(q2), scatter(v), scatter(target_q1), scatter(target_q2))

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> ILQLOutput:
        """Q and V at every column of ``tokens (B, T)`` (``attention_mask`` as for :meth:`GPT.forward`)."""
        return self.values(self.hidden(tokens, attention_mask))

    def fork(self) -> "ILQL":
        """A copy with its own heads (and target heads) on the *same* trunk object: to train
        variants (another tau, no CQL) from one shared starting point cheaply."""
        trunk, self.trunk = self.trunk, None
        try:
            twin = copy.deepcopy(self)
        finally:
            self.trunk = trunk
        twin.trunk = trunk
        return twin

    @torch.no_grad()
    def update_target(self, polyak: float) -> None:
        r"""Polyak averaging :math:`\bar\theta \leftarrow (1-\rho)\,\bar\theta + \rho\,\theta` of the Q heads."""
        for online, target in ((self.heads.q1, self.target_q1), (self.heads.q2, self.target_q2)):
            for p, p_target in zip(online.parameters(), target.parameters()):
                p_target.lerp_(p, polyak)

    @torch.no_grad()
    def q_and_v(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(min(target Q1, Q2) (B, T, V), V (B, T))``: what policy extraction reads."""
        return self.q_and_v_from_hidden(self.hidden(tokens, attention_mask))

    @torch.no_grad()
    def q_and_v_from_hidden(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`q_and_v` from hidden states already computed (e.g. by the BC model that is the trunk)."""
        return torch.minimum(self.target_q1(hidden), self.target_q2(hidden)), self.heads.v(hidden).squeeze(-1)


def ilql_loss(out: ILQLOutput, batch: Batch, config: ILQLConfig) -> tuple[torch.Tensor, ILQLStats]:
    """ILQL's loss on one batch (the module docstring's :math:`\\mathcal L`) and its diagnostics."""
    tokens, actions = batch.tokens, batch.action_mask.float()
    q1, q2 = taken_action_values(out.q1, tokens), taken_action_values(out.q2, tokens)  # (B, T)
    targets = td_targets(batch.rewards, out.v, batch.action_mask, batch.mask, batch.terminal, config.gamma)
    n_actions = actions.sum().clamp(min=1.0)
    q_loss = (((q1 - targets) ** 2 + (q2 - targets) ** 2) * actions).sum() / n_actions
    q_target = torch.minimum(taken_action_values(out.target_q1, tokens), taken_action_values(out.target_q2, tokens))
    v_before = state_values_before_actions(out.v)  # V(h_{t-1}) in the action's column
    v_loss = expectile_loss(q_target.detach() - v_before, config.tau, actions)
    loss = q_loss + v_loss
    cql = torch.zeros((), device=loss.device)
    if config.cql_weight > 0:
        cql = cql_penalty(out.q1, tokens, batch.action_mask) + cql_penalty(out.q2, tokens, batch.action_mask)
        loss = loss + config.cql_weight * cql
    stats = ILQLStats(
        loss=float(loss.detach()),
        q_loss=float(q_loss.detach()),
        v_loss=float(v_loss.detach()),
        cql=float(cql.detach()),
        q_mean=float((q_target * actions).sum() / n_actions),
        v_mean=float((v_before.detach() * actions).sum() / n_actions),
    )
    return loss, stats


def warm_start_loss(out: ILQLOutput, batch: Batch, config: ILQLConfig) -> torch.Tensor:
    r"""Regression of both Q heads and V on the logged returns :math:`G_t`
    (:func:`~seqrl.offline.objectives.monte_carlo_returns`): the behaviour policy's values, reached
    without bootstrapping. Token-level TD needs one round of target updates per agent token of the
    episode to carry a return back to the first token; starting from :math:`Q^{\pi_\beta}` leaves
    ILQL only the (local) improvement over the behaviour to propagate. The CQL penalty is kept, so
    tokens the agent never wrote do not keep the optimistic initial Q = 0."""
    actions = batch.action_mask.float()
    returns = monte_carlo_returns(batch.rewards, batch.action_mask, config.gamma)
    q1, q2 = taken_action_values(out.q1, batch.tokens), taken_action_values(out.q2, batch.tokens)
    v_before = state_values_before_actions(out.v)
    squared = (q1 - returns) ** 2 + (q2 - returns) ** 2 + (v_before - returns) ** 2
    loss = (squared * actions).sum() / actions.sum().clamp(min=1.0)
    if config.cql_weight > 0:  # the same conservatism as ILQL's loss: tokens never written stay low
        loss = loss + config.cql_weight * (cql_penalty(out.q1, batch.tokens, batch.action_mask)
                                           + cql_penalty(out.q2, batch.tokens, batch.action_mask))
    return loss


@dataclass
class ILQLHistory:
    """Per-step diagnostics of :func:`train_ilql`."""

    stats: list[ILQLStats] = field(default_factory=list)
    seconds: float = 0.0

    def series(self, name: str) -> list[float]:
        """One diagnostic over training, e.g. ``history.series("v_mean")``."""
        return [getattr(s, name) for s in self.stats]


def decision_states(action_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool: the columns whose Q or V a loss reads: every state followed by an agent
    token, and each row's last real column (the bootstrap state of a row cut before its end)."""
    states = F.pad(action_mask[:, 1:].bool(), (0, 1))
    last = (mask.long().sum(dim=1) - 1).clamp(min=0)
    states[torch.arange(len(mask), device=mask.device), last] = True
    return states


@torch.no_grad()
def dataset_hidden(model: ILQL, dataset: Any, chunk: int = 256) -> torch.Tensor:
    """Hidden states ``(E, T, C)`` of every row of ``dataset`` under the model's (fixed) trunk.

    Right padding: a row's hidden states at its real columns do not depend on its padding, so the
    rows are read in chunks of similar length, each trimmed to its longest row, and can be sliced to
    any batch width later. Columns after a row's last real token are 0 (no loss reads them).
    """
    tokens = dataset.tokens.to(model.device)
    lengths = dataset.mask.sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    hidden = torch.zeros(*tokens.shape, model.trunk.config.n_embd, device=model.device)
    with evaluating(model.trunk):
        for i in range(0, len(tokens), chunk):
            rows = order[i : i + chunk]
            width = int(lengths[rows].max())
            out = model.trunk(tokens[rows.to(model.device), :width]).hidden  # (chunk, width, C)
            real = (torch.arange(width) < lengths[rows, None]).to(model.device)  # (chunk, width)
            hidden[rows.to(model.device), :width] = out * real[..., None]
    return hidden


def _run(model: ILQL, dataset: Any, config: ILQLConfig, steps: int, loss_fn, hidden: torch.Tensor | None,
         generator: torch.Generator, desc: str, history: "ILQLHistory | None") -> None:
    """The optimisation loop shared by the warm start and ILQL proper."""
    params = model.trainable_parameters()
    optimizer = adamw(params, config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
    model.train()
    for step in progress(range(steps), desc=desc):
        rows = torch.randint(len(dataset.tokens), (config.batch_size,), generator=generator)
        batch = batch_at(dataset, rows, model.device)
        set_learning_rate(optimizer, warmup_cosine(step, steps, config.lr, config.warmup))
        states = model.hidden(batch.tokens) if hidden is None else hidden[rows.to(hidden.device), : batch.tokens.shape[1]]
        out = model.values(states, decision_states(batch.action_mask, batch.mask), targets=history is not None)
        result = loss_fn(out, batch, config)
        loss = result[0] if isinstance(result, tuple) else result
        gradient_step(optimizer, loss, params, 1.0)
        if history is not None:
            model.update_target(config.polyak)
            history.stats.append(result[1])
    model.eval()


def _check_hidden(model: ILQL, dataset: Any, hidden: torch.Tensor | None) -> torch.Tensor | None:
    if model.train_trunk:
        if hidden is not None:
            raise ValueError("precomputed hidden states only make sense with a fixed trunk (train_trunk=False)")
        return None
    if hidden is None:
        return dataset_hidden(model, dataset)
    if hidden.shape[:2] != dataset.tokens.shape:
        raise ValueError(f"hidden must be (E, T, C) with (E, T) = {tuple(dataset.tokens.shape)}, got {tuple(hidden.shape)}")
    return hidden


def warm_start_ilql(model: ILQL, dataset: Any, config: ILQLConfig, hidden: torch.Tensor | None = None,
                    desc: str = "ILQL warm start") -> None:
    """Fit Q and V to the logged returns for ``config.warm_start_steps`` steps (:func:`warm_start_loss`),
    then copy the Q heads into the target heads. ``hidden``: :func:`dataset_hidden`, if computed."""
    check_offline_dataset(dataset)
    hidden = _check_hidden(model, dataset, hidden)
    generator = torch.Generator().manual_seed(config.seed + 1)
    _run(model, dataset, config, config.warm_start_steps, warm_start_loss, hidden, generator, desc, None)
    model.update_target(1.0)


def train_ilql(model: ILQL, dataset: Any, config: ILQLConfig | None = None, hidden: torch.Tensor | None = None,
               desc: str = "ILQL") -> ILQLHistory:
    """Train ``model`` in place with ILQL on an offline dataset; reproducible from ``config.seed``.

    First ``config.warm_start_steps`` of :func:`warm_start_ilql` (if any), then ``config.steps`` of
    :func:`ilql_loss` with a Polyak update of the target heads after each. With a fixed trunk
    (``model.train_trunk`` false) the dataset's hidden states are computed once (or passed as
    ``hidden``) and only the heads train.
    """
    config = config or ILQLConfig()
    check_offline_dataset(dataset)
    hidden = _check_hidden(model, dataset, hidden)
    start = time.perf_counter()
    if config.warm_start_steps:
        warm_start_ilql(model, dataset, config, hidden, desc=f"{desc} (Monte-Carlo warm start)")
    history = ILQLHistory()
    generator = torch.Generator().manual_seed(config.seed)
    _run(model, dataset, config, config.steps, ilql_loss, hidden, generator, desc, history)
    history.seconds = time.perf_counter() - start
    return history


def train_ilql_heads(trunk: GPT, dataset: Any, config: ILQLConfig, width: int | None = None,
                     hidden: torch.Tensor | None = None, desc: str = "ILQL") -> ILQL:
    """New ILQL heads on a *fixed* trunk (``train_trunk=False``), trained by :func:`train_ilql`.

    ``config.seed`` seeds everything: the heads' initial weights (drawn here, after
    :func:`~seqrl.utils.seed_everything`) and the minibatch order, so one call per training seed
    gives a reproducible run. ``hidden``: :func:`dataset_hidden` of ``trunk``, if already computed.
    """
    seed_everything(config.seed)
    model = ILQL(trunk, width=width, train_trunk=False)
    train_ilql(model, dataset, config, hidden, desc=desc)
    return model
