"""Exercise ex07: offline RL with ILQL (expectile loss, TD targets across turns, policy extraction)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import Case, Exercise, WrongAnswer

__all__ = ["EXERCISES", "two_turn_batch"]


# ---------------------------------------------------------------------------------------------
# ex07a: the expectile loss  L = mean_m |tau - 1(u < 0)| u^2


def _expectile_reference(diff: torch.Tensor, tau: float, mask: torch.Tensor) -> torch.Tensor:
    from seqrl.offline import expectile_loss

    return expectile_loss(diff, tau, mask)


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum()


def _swapped_weights(diff, tau, mask):
    """Positive errors weighted 1 - tau, negative ones tau (V learns a low expectile)."""
    return _masked_mean(torch.where(diff < 0, tau, 1 - tau) * diff**2, mask)


def _plain_mse(diff, tau, mask):
    """tau ignored: every error weighted 1."""
    return _masked_mean(diff**2, mask)


def _absolute_error(diff, tau, mask):
    """|u| instead of u^2: the quantile (pinball) loss, not the expectile loss."""
    return _masked_mean(torch.where(diff < 0, 1 - tau, tau) * diff.abs(), mask)


def _mask_ignored(diff, tau, mask):
    """Padding averaged in: mean over every entry."""
    return (torch.where(diff < 0, 1 - tau, tau) * diff**2).mean()


def _sum_not_mean(diff, tau, mask):
    """Summed over the real entries instead of averaged."""
    return (torch.where(diff < 0, 1 - tau, tau) * diff**2 * mask.to(diff.dtype)).sum()


def expectile_loss_exercise() -> Exercise:
    def case(diff: list[float], tau: float, mask: list[int], what: str) -> Case:
        return Case((torch.tensor(diff), tau, torch.tensor(mask)), {}, f"{what}: u = {diff}, tau = {tau:g}, mask = {mask}")

    cases = [
        case([1.0, -2.0], 0.8, [1, 1], "one positive and one negative error"),
        case([3.0, -1.0, 0.5], 0.9, [1, 1, 1], "tau = 0.9"),
        case([2.0, -2.0, 7.0], 0.7, [1, 1, 0], "a padded entry"),
        case([1.5, -0.5, 2.0, -3.0], 0.5, [1, 1, 1, 1], "tau = 0.5 (half the squared error)"),
        case([-1.0, -2.0, 4.0, 0.0], 0.6, [1, 1, 0, 0], "two padded entries"),
    ]
    wrong_answers = [
        WrongAnswer("expectile weights swapped (tau vs 1 - tau)", _swapped_weights,
                    "errors with Q above V (u > 0) weigh tau, those below weigh 1 - tau: with tau > 0.5 V is pulled up towards the better actions."),
        WrongAnswer("tau ignored (plain squared error)", _plain_mse,
                    "each squared error is weighted by |tau - 1(u < 0)|: tau when u >= 0, 1 - tau when u < 0."),
        WrongAnswer("absolute instead of squared error", _absolute_error,
                    "the expectile loss squares the error, |tau - 1(u<0)| * u**2; with |u| you get the quantile (pinball) loss."),
        WrongAnswer("padding counted in the mean", _mask_ignored,
                    "average over the real entries only: (loss * mask).sum() / mask.sum()."),
        WrongAnswer("summed instead of averaged", _sum_not_mean,
                    "divide the masked sum by the number of real entries, mask.sum(), so the loss does not grow with the batch."),
    ]
    return Exercise("expectile_loss", _expectile_reference, cases, wrong_answers)


# ---------------------------------------------------------------------------------------------
# ex07b: ILQL's targets: y_t = r_t + gamma (1 - d_t) V(h_{t'-1}) and the V target min(target Q1, Q2)

# A right-padded batch of two dialogues laid out like the games' rows:
# col: 0 <bos> 1 <agent> 2 w 3 <sep> 4 <user> 5 y 6 <agent> 7 w 8 <sep> 9 <user> 10 c 11 <eos> 12 pad
_AGENT_COLS = [2, 3, 7, 8]


def two_turn_batch(terminal: tuple[bool, ...], seed: int) -> tuple:
    """``(rewards, values, q_online, q_target, action_mask, mask, terminal)`` of a two-turn batch:
    ``q_online, q_target (2, B, T)`` twin Q-values of the taken tokens, random but distinct."""
    B, T = len(terminal), 13
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, dtype=torch.long)
    mask[:, :12] = 1
    action_mask = torch.zeros(B, T, dtype=torch.long)
    action_mask[:, _AGENT_COLS] = 1
    rewards = torch.zeros(B, T)
    rewards[:, 3] = -1.0
    rewards[:, 8] = -1.0
    values = torch.round(torch.randn(B, T, generator=g) * 4) / 2 - 3.0
    q_online = torch.round(torch.randn(2, B, T, generator=g) * 4) / 2 - 3.0
    q_target = torch.round(torch.randn(2, B, T, generator=g) * 4) / 2 - 3.0
    return rewards, values, q_online, q_target, action_mask, mask, torch.tensor(terminal)


def _targets_reference(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma):
    from seqrl.offline import td_targets

    q_targets = td_targets(rewards, values, action_mask, mask, terminal, gamma)
    v_targets = torch.minimum(q_target[0], q_target[1]) * action_mask.to(values.dtype)
    return q_targets, v_targets


def _bootstrap_through_terminal(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma):
    """The last action of a finished episode bootstraps from the value after it."""
    return _targets_reference(rewards, values, q_online, q_target, action_mask, mask, torch.zeros_like(terminal), gamma)


def _online_q_for_v(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma):
    """V regressed on the online Q heads instead of the target heads."""
    q_targets, _ = _targets_reference(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma)
    return q_targets, torch.minimum(q_online[0], q_online[1]) * action_mask.to(values.dtype)


def _max_of_twins(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma):
    """The larger of the twin target Q-values instead of the smaller."""
    q_targets, _ = _targets_reference(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma)
    return q_targets, torch.maximum(q_target[0], q_target[1]) * action_mask.to(values.dtype)


def _next_column_everywhere(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma):
    """Bootstraps from V(h_t) (the next column) even at the end of a turn: the reply is skipped."""
    _, v_targets = _targets_reference(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma)
    from seqrl.offline import next_action_index

    _, has_next = next_action_index(action_mask, mask)
    last_real = (mask.sum(1) - 1)[:, None].expand_as(values)
    index = torch.where(has_next, torch.arange(values.shape[1]).expand_as(values), last_real)
    done = ~has_next & terminal[:, None]
    q = (rewards + gamma * (~done).to(values.dtype) * values.gather(1, index)) * action_mask.to(values.dtype)
    return q, v_targets


def _value_of_next_token_state(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma):
    """Bootstraps from V(h_{t'}) (the state after the next agent token) instead of V(h_{t'-1})."""
    _, v_targets = _targets_reference(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma)
    from seqrl.offline import next_action_index

    index, has_next = next_action_index(action_mask, mask)
    index = torch.where(has_next, index + 1, index)
    done = ~has_next & terminal[:, None]
    q = (rewards + gamma * (~done).to(values.dtype) * values.gather(1, index)) * action_mask.to(values.dtype)
    return q, v_targets


def _no_discount(rewards, values, q_online, q_target, action_mask, mask, terminal, gamma):
    """gamma ignored."""
    return _targets_reference(rewards, values, q_online, q_target, action_mask, mask, terminal, 1.0)


def ilql_targets_exercise() -> Exercise:
    def case(terminal: tuple[bool, ...], gamma: float, seed: int, what: str) -> Case:
        return Case((*two_turn_batch(terminal, seed), gamma), {}, f"{what}, terminal = {list(terminal)}, gamma = {gamma:g}")

    cases = [
        case((True,), 1.0, 0, "one finished two-turn dialogue"),
        case((True, False), 0.9, 1, "a finished and a cut dialogue"),
        case((False,), 0.5, 2, "a dialogue cut before its end"),
        case((True, True), 0.99, 3, "two finished dialogues"),
    ]
    wrong_answers = [
        WrongAnswer("bootstrapping through a terminal", _bootstrap_through_terminal,
                    "after the last action of a finished episode (terminal and no agent token after it) the target is r_t alone: multiply the bootstrap by (1 - done)."),
        WrongAnswer("online instead of target Q for V", _online_q_for_v,
                    "V's target is min of the *target* (Polyak-averaged) twin Q heads, q_target, not the online heads being trained."),
        WrongAnswer("max of the twin Q heads", _max_of_twins,
                    "take the minimum of the two target Q heads (clipped double Q): the max keeps their over-estimation."),
        WrongAnswer("the backup does not cross the user's reply", _next_column_everywhere,
                    "at the end of a turn the next decision comes after the reply: bootstrap from V at column t'-1, with t' the next agent token, not from V at column t."),
        WrongAnswer("value read one column too late", _value_of_next_token_state,
                    "the next decision is made in the state just *before* the next agent token, V(h_{t'-1}), not after it."),
        WrongAnswer("no discount", _no_discount,
                    "multiply the bootstrapped value by gamma: y_t = r_t + gamma * (1 - d_t) * V."),
    ]
    return Exercise("ilql_targets", _targets_reference, cases, wrong_answers)


# ---------------------------------------------------------------------------------------------
# ex07c: policy extraction  log pi_beta + beta (Q - V)


def _perturbed_reference(bc_logits, q, v, beta):
    from seqrl.offline import perturbed_logits

    return perturbed_logits(bc_logits, q, v, beta)


def _adds_v(bc_logits, q, v, beta):
    """The advantage written Q + V."""
    return F.log_softmax(bc_logits, -1) + beta * (q + v[..., None])


def _raw_bc_logits(bc_logits, q, v, beta):
    """The BC logits used unnormalised instead of log pi_beta."""
    return bc_logits + beta * (q - v[..., None])


def _beta_on_q_only(bc_logits, q, v, beta):
    """beta multiplies Q but not V."""
    return F.log_softmax(bc_logits, -1) + beta * q - v[..., None]


def _divides_by_beta(bc_logits, q, v, beta):
    """beta used as a temperature: (Q - V) / beta."""
    return F.log_softmax(bc_logits, -1) + (q - v[..., None]) / beta


def _greedy_q(bc_logits, q, v, beta):
    """The BC model ignored: beta (Q - V) alone."""
    return beta * (q - v[..., None])


def _probabilities_not_logs(bc_logits, q, v, beta):
    """pi_beta added as a probability instead of a log-probability."""
    return F.softmax(bc_logits, -1) + beta * (q - v[..., None])


def perturbed_logits_exercise() -> Exercise:
    def case(bc: list, q: list, v: list, beta: float, what: str) -> Case:
        return Case((torch.tensor(bc), torch.tensor(q), torch.tensor(v), beta), {}, f"{what}, beta = {beta:g}")

    cases = [
        case([[0.0, 0.0]], [[1.0, 2.0]], [1.5], 2.0, "uniform BC, two tokens"),
        case([[2.0, 0.0, -1.0]], [[0.0, 1.0, 0.5]], [0.3], 4.0, "three tokens"),
        case([[1.0, 2.0, 3.0], [0.5, 0.5, -1.0]], [[-3.0, -2.0, -4.0], [-1.0, -1.5, -0.5]], [-2.5, -1.0], 0.5, "a batch of two histories"),
        case([[math.log(0.7), math.log(0.3)]], [[-5.0, -4.0]], [-4.7], 1.0, "beta = 1"),
    ]
    wrong_answers = [
        WrongAnswer("adding instead of subtracting V", _adds_v,
                    "the advantage is Q(h, a) - V(h): subtract V (it does not change the softmax, but the logits are wrong)."),
        WrongAnswer("unnormalised BC logits", _raw_bc_logits,
                    "start from log pi_beta(a|h): normalise the BC logits with log_softmax over the vocabulary."),
        WrongAnswer("beta multiplies Q only", _beta_on_q_only,
                    "beta multiplies the whole advantage: beta * (Q - V)."),
        WrongAnswer("beta used as a temperature", _divides_by_beta,
                    "pi is proportional to pi_beta * exp(beta * A): multiply the advantage by beta, do not divide by it."),
        WrongAnswer("BC model left out", _greedy_q,
                    "ILQL tilts the BC model: add log pi_beta(a|h) so the policy stays on the tokens the data wrote."),
        WrongAnswer("probabilities instead of log-probabilities", _probabilities_not_logs,
                    "the logits of pi are log pi_beta + beta * A: use log_softmax, not softmax, of the BC logits."),
    ]
    return Exercise("perturbed_logits", _perturbed_reference, cases, wrong_answers)


EXERCISES = {
    "expectile_loss": expectile_loss_exercise,
    "ilql_targets": ilql_targets_exercise,
    "perturbed_logits": perturbed_logits_exercise,
}
