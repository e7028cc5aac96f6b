r"""The pieces of Implicit Language Q-Learning (ILQL; Snell, Kostrikov, Su, Yang & Levine 2022), as
small pure functions on right-padded batches of logged dialogues.

Layout. A row holds one episode: ``tokens (B, T)`` starting with ``<bos>``, ``mask (B, T)`` (1 on real
tokens), ``action_mask (B, T)`` (1 where the *agent* wrote the token: the actions), ``rewards (B, T)``
(the reward received after the action in column ``t``, 0 elsewhere) and ``terminal (B,)``. The trunk
reads the whole row; its hidden state in column ``t`` is the history :math:`h_t = x_{\le t}`. The
action written in column ``t`` was therefore chosen in state :math:`h_{t-1}`, and every per-action
quantity below is stored in the action's own column ``t`` (column 0, ``<bos>``, is never an action).

The time step is one agent token. Inside an utterance the next state is the next column; at the
end of a turn the next *decision* comes after the other party's reply, so the Bellman backup of the
turn's last token reads the value of the state just before the next agent token and crosses the
reply (the user's tokens are observations, not actions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "expectile_loss",
    "taken_action_values",
    "state_values_before_actions",
    "next_action_index",
    "td_targets",
    "monte_carlo_returns",
    "cql_penalty",
    "perturbed_logits",
]


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"these tensors must have one shape, got {shapes}")


def expectile_loss(diff: torch.Tensor, tau: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Asymmetric squared loss of IQL (Kostrikov et al. 2021), the mean over real entries of

    .. math:: L_\tau(u) = \big|\tau - \mathbb 1(u < 0)\big|\, u^2, \qquad u = \hat Q(h, a) - V(h).

    Minimising :math:`\mathbb E_{a\sim\pi_\beta}[L_\tau(\hat Q(h,a) - V(h))]` over :math:`V(h)` gives the
    :math:`\tau`-expectile of :math:`\hat Q(h, a)` under the data's actions: the mean at
    :math:`\tau = 0.5` (where :math:`L_{0.5}(u) = u^2/2`, half the squared error), and a value that
    approaches the best action in the data, :math:`\max_{a \in \text{data}} \hat Q(h,a)`, as
    :math:`\tau \to 1`. Positive errors (:math:`Q` above :math:`V`) weigh :math:`\tau`, negative ones
    :math:`1-\tau`.

    Args:
        diff: ``(...)`` the differences :math:`u = \hat Q - V` (the gradient reaches V through it).
        tau: the expectile, in ``(0, 1)``.
        mask: ``(...)`` 1 where an entry counts (agent tokens), or ``None`` for all.

    Returns:
        the scalar mean of :math:`L_\tau` over the masked entries.
    """
    if not 0.0 < tau < 1.0:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    _check_same_shape(diff=diff, mask=mask)
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    loss = weight * diff**2
    if mask is None:
        return loss.mean()
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def taken_action_values(q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    r"""The Q-value of the token actually written, stored in that token's column.

    .. math:: \text{out}[b, t] = Q(h_{t-1}, x_t) = q[b, t-1, x_{b,t}] \quad (t \ge 1), \qquad \text{out}[b, 0] = 0.

    Args:
        q: ``(B, T, V)`` Q-values over the vocabulary at every history column.
        tokens: ``(B, T)`` the row's token ids.

    Returns:
        ``(B, T)``; only the agent columns mean anything.
    """
    if q.dim() != 3 or q.shape[:2] != tokens.shape:
        raise ValueError(f"q must be (B, T, V) with (B, T) = tokens.shape {tuple(tokens.shape)}, got {tuple(q.shape)}")
    taken = q[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)
    return F.pad(taken, (1, 0))  # (B, T)


def state_values_before_actions(v: torch.Tensor) -> torch.Tensor:
    r"""``v (B, T)`` with ``v[:, t] = V(h_t)`` shifted so column ``t`` holds :math:`V(h_{t-1})`, the
    value of the state in which the token of column ``t`` was chosen (column 0 gets 0)."""
    if v.dim() != 2:
        raise ValueError(f"v must be (B, T), got {tuple(v.shape)}")
    return F.pad(v[:, :-1], (1, 0))


def next_action_index(action_mask: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Where the Bellman backup of each action reads its next state.

    For an action in column ``t`` let :math:`t'` be the next agent column after ``t`` in the row. The
    next decision is made in state :math:`h_{t'-1}` (inside an utterance :math:`t' = t + 1`, so this is
    :math:`h_t`; at the end of a turn it is the history that includes the other party's reply). If no
    agent token follows, the next state is the whole row, :math:`h_{L-1}` with :math:`L` the row's
    number of real tokens.

    Args:
        action_mask: ``(B, T)`` 1 on agent tokens.
        mask: ``(B, T)`` 1 on real tokens (right-padded).

    Returns:
        ``(index, has_next)``: ``index (B, T)`` long, the column of the next state; ``has_next (B, T)``
        bool, whether an agent token follows column ``t``.
    """
    _check_same_shape(action_mask=action_mask, mask=mask)
    if action_mask.dim() != 2:
        raise ValueError(f"action_mask must be (B, T), got {tuple(action_mask.shape)}")
    B, T = action_mask.shape
    columns = torch.arange(T, device=action_mask.device).expand(B, T)
    big = torch.full_like(columns, T)
    is_action = action_mask.bool()
    # the first agent column at or after t, then shifted: strictly after t
    first_from = torch.where(is_action, columns, big).flip(1).cummin(1).values.flip(1)  # (B, T)
    next_column = F.pad(first_from[:, 1:], (0, 1), value=T)  # (B, T)
    has_next = next_column < T
    last_real = (mask.long().sum(dim=1) - 1).clamp(min=0)[:, None].expand(B, T)
    index = torch.where(has_next, next_column - 1, last_real)
    return index, has_next


def td_targets(
    rewards: torch.Tensor,
    values: torch.Tensor,
    action_mask: torch.Tensor,
    mask: torch.Tensor,
    terminal: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    r"""ILQL's Q targets at token level, across turn boundaries and stopping at terminals.

    .. math:: y_t = r_t + \gamma\,(1 - d_t)\, V(h_{t'-1}),

    with :math:`t'` the next agent column (see :func:`next_action_index`: within an utterance
    :math:`h_{t'-1} = h_t`, after the turn's last token it is the history including the reply) and
    :math:`d_t = 1` when no agent token follows and the episode ended inside the row (``terminal``):
    the value after the end of an episode is zero, never bootstrapped. A row cut before the episode
    ended (``terminal`` false) bootstraps its last action from the value of the whole row.

    The values come from the V head, *detached*: the target is a constant for the Q loss.

    Args:
        rewards: ``(B, T)`` reward after the action in column ``t``.
        values: ``(B, T)`` :math:`V(h_t)` at every column (the state after token ``t``).
        action_mask, mask: ``(B, T)`` agent tokens and real tokens.
        terminal: ``(B,)`` bool, the episode ended in the row.
        gamma: discount per agent token, in ``[0, 1]``.

    Returns:
        ``(B, T)`` targets in agent columns, 0 elsewhere.
    """
    _check_same_shape(rewards=rewards, values=values, action_mask=action_mask, mask=mask)
    if terminal.shape != rewards.shape[:1]:
        raise ValueError(f"terminal must be (B,) = {tuple(rewards.shape[:1])}, got {tuple(terminal.shape)}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    index, has_next = next_action_index(action_mask, mask)
    next_values = values.detach().gather(1, index)  # (B, T)
    done = ~has_next & terminal.bool()[:, None]
    targets = rewards + gamma * (~done).to(values.dtype) * next_values
    return targets * action_mask.to(values.dtype)


def monte_carlo_returns(rewards: torch.Tensor, action_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    r"""The logged return from each action on, discounted per agent token:
    :math:`G_t = r_t + \gamma\, G_{t'}` with :math:`t'` the next agent column (:math:`G = 0` after the last).

    These are the values of the *behaviour* policy, :math:`\mathbb E[G_t] = Q^{\pi_\beta}(h_{t-1}, a_t)`:
    the regression targets of a Monte-Carlo warm start, and what ILQL's fixed point reduces to at
    :math:`\tau = 0.5` (no improvement over the data). ``rewards, action_mask (B, T)`` -> ``(B, T)``,
    0 outside agent columns.
    """
    _check_same_shape(rewards=rewards, action_mask=action_mask)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    is_action = action_mask.bool()
    if gamma == 1.0:  # undiscounted: the sum of the rewards of this and every later action (one reverse cumsum)
        rewards_of_actions = torch.where(is_action, rewards, torch.zeros_like(rewards))
        to_go = rewards_of_actions.flip(1).cumsum(1).flip(1)
        return torch.where(is_action, to_go, torch.zeros_like(to_go))
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # G of the next agent column
    for t in range(rewards.shape[1] - 1, -1, -1):
        here = rewards[:, t] + gamma * running
        running = torch.where(is_action[:, t], here, running)
        returns[:, t] = torch.where(is_action[:, t], here, torch.zeros_like(here))
    return returns


def cql_penalty(q: torch.Tensor, tokens: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    r"""Conservative Q-learning's regulariser (Kumar et al. 2020) on Q over the vocabulary:

    .. math:: \mathcal L_{\text{CQL}} = \mathbb E_{(h,a)\sim\mathcal D}\Big[\log\sum_{a'} \exp Q(h, a') - Q(h, a)\Big],

    the cross-entropy of the softmax of the Q "logits" against the data's token. It pushes down every
    token the data did not write in that history, so Q cannot be large on actions it never saw a
    return for, which is what a max-like policy would pick.

    Args:
        q: ``(B, T, V)`` Q-values at every history column.
        tokens: ``(B, T)`` token ids; the action in column ``t`` is scored in state ``t - 1``.
        action_mask: ``(B, T)`` 1 on agent tokens.

    Returns:
        the scalar mean over agent tokens.
    """
    if q.dim() != 3 or q.shape[:2] != tokens.shape:
        raise ValueError(f"q must be (B, T, V) with (B, T) = tokens.shape {tuple(tokens.shape)}, got {tuple(q.shape)}")
    _check_same_shape(tokens=tokens, action_mask=action_mask)
    per_token = F.cross_entropy(q[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # (B, T-1)
    weight = action_mask[:, 1:].to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum().clamp(min=1.0)


def perturbed_logits(bc_logits: torch.Tensor, q: torch.Tensor, v: torch.Tensor, beta: float) -> torch.Tensor:
    r"""ILQL's policy extraction: the behaviour model tilted by the advantage.

    .. math:: \pi(a \mid h) \propto \pi_\beta(a \mid h)\, \exp\big(\beta\,(Q(h, a) - V(h))\big),
              \qquad \text{out}(a) = \log\pi_\beta(a\mid h) + \beta\,\big(Q(h,a) - V(h)\big).

    ``out`` are logits of :math:`\pi` (a softmax over them is :math:`\pi`). :math:`\beta = 0` gives the
    behaviour model back; :math:`\beta \to \infty` the greedy :math:`\arg\max_a Q` among the tokens
    :math:`\pi_\beta` writes. This is the solution of
    :math:`\max_\pi \mathbb E_\pi[A] - \tfrac1\beta \mathrm{KL}(\pi\|\pi_\beta)`: KL-control
    (Jaques et al. 2017/2019) with the advantage as reward, so the policy stays on the data's support.

    Args:
        bc_logits: ``(..., V)`` logits of the behaviour-cloned model :math:`\pi_\beta`.
        q: ``(..., V)`` :math:`Q(h, a)` for every token.
        v: ``(...)`` :math:`V(h)`.
        beta: inverse temperature :math:`\beta \ge 0`.
    """
    if bc_logits.shape != q.shape or v.shape != q.shape[:-1]:
        raise ValueError(
            f"bc_logits and q must be (..., V) and v (...), got {tuple(bc_logits.shape)}, {tuple(q.shape)}, {tuple(v.shape)}"
        )
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return F.log_softmax(bc_logits, dim=-1) + beta * (q - v[..., None])
