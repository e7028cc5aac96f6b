"""ILQL's pieces against hand computations: expectile loss, TD targets across turns, CQL, extraction."""
import math

import pytest
import torch

from seqrl.offline import (
    ILQLConfig,
    ILQLOutput,
    cql_penalty,
    expectile,
    expectile_loss,
    ilql_loss,
    next_action_index,
    perturbed_logits,
    state_values_before_actions,
    taken_action_values,
    td_targets,
)
from seqrl.offline.data import Batch

# A hand-made two-turn dialogue, laid out like the games' rows:
# col: 0 <bos> 1 <agent> 2 w 3 <sep> 4 <user> 5 y 6 <agent> 7 w 8 <sep> 9 <user> 10 c 11 <eos> 12 pad 13 pad
T = 14
AGENT_COLS = [2, 3, 7, 8]


def two_turn_rows(terminal: tuple[bool, ...] = (True, False)):
    B = len(terminal)
    mask = torch.zeros(B, T, dtype=torch.long)
    mask[:, :12] = 1
    action_mask = torch.zeros(B, T, dtype=torch.long)
    action_mask[:, AGENT_COLS] = 1
    rewards = torch.zeros(B, T)
    rewards[:, 3] = -1.0
    rewards[:, 8] = -1.0
    values = 100.0 + torch.arange(T, dtype=torch.float32).expand(B, T)  # V(h_t) = 100 + t: easy to read
    return rewards, values, action_mask, mask, torch.tensor(terminal)


# ----------------------------------------------------------------------------- expectile loss
def test_expectile_loss_matches_hand_value():
    # u = [1, -2], tau = 0.8: weights [0.8, 0.2], losses [0.8 * 1, 0.2 * 4] = [0.8, 0.8]
    assert expectile_loss(torch.tensor([1.0, -2.0]), 0.8).item() == pytest.approx(0.8)
    # u = [3, -1], tau = 0.9: [0.9 * 9, 0.1 * 1] -> mean 4.1
    assert expectile_loss(torch.tensor([3.0, -1.0]), 0.9).item() == pytest.approx(4.1)


def test_expectile_loss_weighs_positive_errors_by_tau():
    up, down = torch.tensor([1.0]), torch.tensor([-1.0])
    assert expectile_loss(up, 0.9).item() == pytest.approx(0.9)
    assert expectile_loss(down, 0.9).item() == pytest.approx(0.1)


def test_expectile_loss_at_one_half_is_half_the_mse():
    diff = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (diff**2).mean().item())


def test_expectile_loss_gradient_matches_finite_differences():
    diff = torch.tensor([0.7, -1.3, 2.1, -0.2], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([1, 1, 0, 1])
    assert torch.autograd.gradcheck(lambda d: expectile_loss(d, 0.8, mask), (diff,))


def test_expectile_loss_ignores_masked_entries():
    diff, mask = torch.tensor([1.0, 100.0, -2.0]), torch.tensor([1, 0, 1])
    assert expectile_loss(diff, 0.8, mask).item() == pytest.approx(0.8)


def test_expectile_regression_moves_from_the_mean_to_the_max_as_tau_grows():
    q = torch.tensor([0.0, 1.0, 4.0])  # Q of the data's actions in one state, equally likely
    fitted = {}
    for tau in (0.5, 0.9, 0.99):
        v = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.SGD([v], lr=0.5)
        for _ in range(300):
            optimizer.zero_grad()
            expectile_loss(q - v, tau).backward()
            optimizer.step()
        fitted[tau] = v.item()
        assert fitted[tau] == pytest.approx(expectile(q.numpy(), [1 / 3] * 3, tau), abs=1e-3)
    assert fitted[0.5] == pytest.approx(q.mean().item(), abs=1e-3)
    assert fitted[0.5] < fitted[0.9] < fitted[0.99] < q.max().item()
    assert q.max().item() - fitted[0.99] < 0.2


def test_expectile_loss_rejects_bad_tau_and_shapes():
    with pytest.raises(ValueError, match="tau"):
        expectile_loss(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="shape"):
        expectile_loss(torch.zeros(3), 0.7, torch.ones(4))


# ----------------------------------------------------------------------------- TD targets
def test_next_action_index_crosses_the_reply_at_turn_ends():
    _, _, action_mask, mask, _ = two_turn_rows()
    index, has_next = next_action_index(action_mask, mask)
    # inside an utterance: the next state is the next column; at the turn end (col 3) it is col 6,
    # the history that includes the user's reply "<user> y <agent>"; after the last action: none.
    assert index[0, AGENT_COLS].tolist() == [2, 6, 7, 11]
    assert has_next[0, AGENT_COLS].tolist() == [True, True, True, False]


def test_td_targets_on_a_two_turn_dialogue():
    rewards, values, action_mask, mask, terminal = two_turn_rows(terminal=(True, False))
    gamma = 0.9
    targets = td_targets(rewards, values, action_mask, mask, terminal, gamma)
    expected_terminal_row = {2: gamma * 102, 3: -1 + gamma * 106, 7: gamma * 107, 8: -1.0}
    for col, value in expected_terminal_row.items():
        assert targets[0, col].item() == pytest.approx(value)
    # a row cut before its end bootstraps the last action from the value of the whole row (col 11)
    assert targets[1, 8].item() == pytest.approx(-1 + gamma * 111)
    # no target outside the agent's tokens
    others = torch.ones(T, dtype=torch.bool)
    others[AGENT_COLS] = False
    assert targets[:, others].abs().sum().item() == 0.0


def test_td_targets_never_bootstrap_through_a_terminal():
    rewards, values, action_mask, mask, terminal = two_turn_rows(terminal=(True,))
    huge = values.clone()
    huge[:, 9:] = 1e6  # values after the episode's last action must not leak into its target
    assert td_targets(rewards, huge, action_mask, mask, terminal, 1.0)[0, 8].item() == -1.0


def test_td_targets_are_constants_for_the_q_loss():
    rewards, values, action_mask, mask, terminal = two_turn_rows()
    values.requires_grad_(True)
    assert not td_targets(rewards, values, action_mask, mask, terminal, 0.9).requires_grad


def test_td_targets_reject_bad_inputs():
    rewards, values, action_mask, mask, terminal = two_turn_rows()
    with pytest.raises(ValueError, match="gamma"):
        td_targets(rewards, values, action_mask, mask, terminal, 1.5)
    with pytest.raises(ValueError, match="terminal"):
        td_targets(rewards, values, action_mask, mask, terminal[:1], 0.9)


def test_taken_action_values_read_q_in_the_state_before_the_token():
    q = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # (B, T, V)
    tokens = torch.tensor([[1, 2, 3], [1, 0, 1]])
    taken = taken_action_values(q, tokens)
    assert taken.tolist() == [[0.0, q[0, 0, 2].item(), q[0, 1, 3].item()], [0.0, q[1, 0, 0].item(), q[1, 1, 1].item()]]
    assert state_values_before_actions(torch.tensor([[5.0, 6.0, 7.0]])).tolist() == [[0.0, 5.0, 6.0]]


def test_value_loss_regresses_v_on_the_target_network_not_the_online_q():
    rewards, values, action_mask, mask, terminal = two_turn_rows(terminal=(True,))
    tokens = torch.randint(6, 9, (1, T))
    V = 9
    online = torch.zeros(1, T, V)
    target_q1, target_q2 = torch.full((1, T, V), 3.0), torch.full((1, T, V), 2.0)
    v = torch.zeros(1, T, requires_grad=True)
    out = ILQLOutput(online, online.clone(), v, target_q1, target_q2)
    batch = Batch(tokens, mask, action_mask, rewards, terminal)
    _, stats = ilql_loss(out, batch, ILQLConfig(tau=0.7, cql_weight=0.0))
    # min of the target twins is 2 on every action, V = 0: expectile loss 0.7 * 2^2
    assert stats.v_loss == pytest.approx(0.7 * 4.0)
    assert stats.q_mean == pytest.approx(2.0)


# ----------------------------------------------------------------------------- CQL and extraction
def test_cql_penalty_is_logsumexp_minus_the_data_action():
    q = torch.zeros(1, 2, 3)
    q[0, 0] = torch.tensor([0.0, 1.0, 2.0])
    tokens, action_mask = torch.tensor([[0, 1]]), torch.tensor([[0, 1]])
    expected = math.log(1 + math.e + math.e**2) - 1.0
    assert cql_penalty(q, tokens, action_mask).item() == pytest.approx(expected)


def test_cql_penalty_pushes_down_unseen_actions_and_up_the_data_action():
    q = torch.zeros(1, 2, 3, requires_grad=True)
    cql_penalty(q, torch.tensor([[0, 1]]), torch.tensor([[0, 1]])).backward()
    grad = q.grad[0, 0]
    assert grad[1] < 0 < grad[0] and grad[2] > 0  # descent raises Q(data) and lowers the others


def test_perturbed_logits_subtract_the_value():
    bc_logits = torch.tensor([0.0, 0.0])  # pi_beta uniform: log pi_beta = -log 2
    q, v, beta = torch.tensor([1.0, 2.0]), torch.tensor(1.5), 2.0
    out = perturbed_logits(bc_logits, q, v, beta)
    assert out.tolist() == pytest.approx([-math.log(2) - 1.0, -math.log(2) + 1.0])


def test_perturbed_policy_is_behaviour_at_beta_zero_and_greedy_at_large_beta():
    bc_logits = torch.tensor([[2.0, 0.0, -1.0]])
    q, v = torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([0.3])
    assert torch.allclose(perturbed_logits(bc_logits, q, v, 0.0).softmax(-1), bc_logits.softmax(-1))
    assert perturbed_logits(bc_logits, q, v, 100.0).argmax(-1).item() == 1
