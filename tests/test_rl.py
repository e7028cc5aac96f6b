"""Returns, GAE and the policy-gradient losses against hand-computed values and finite differences."""
from __future__ import annotations

import pytest
import torch

from seqrl.rl import discounted_returns, gae, masked_mean, ppo_policy_loss, ppo_value_loss, reinforce_loss, whiten


def test_discounted_returns_match_hand_computation():
    rewards = torch.tensor([1.0, 0.0, 2.0])
    assert torch.allclose(discounted_returns(rewards, 0.5), torch.tensor([1.5, 1.0, 2.0]))
    assert torch.allclose(discounted_returns(rewards, 1.0), torch.tensor([3.0, 2.0, 2.0]))
    batch = torch.stack([rewards, rewards * 2])
    assert discounted_returns(batch, 0.5).shape == (2, 3)


def test_discounted_returns_do_not_leak_across_episodes():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0])
    dones = torch.tensor([False, True, False, True])
    assert torch.allclose(discounted_returns(rewards, 0.9, dones), torch.tensor([1.9, 1.0, 1.9, 1.0]))
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(rewards, 1.5)
    with pytest.raises(ValueError, match="shape"):
        discounted_returns(rewards, 0.9, dones[:2])


def test_gae_with_lambda_one_is_monte_carlo_return_minus_value():
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    advantages, returns = gae(rewards, values, gamma=0.9, lam=1.0)
    assert torch.allclose(advantages, discounted_returns(rewards, 0.9) - values, atol=1e-6)
    assert torch.allclose(returns, discounted_returns(rewards, 0.9), atol=1e-6)


def test_gae_with_lambda_zero_is_the_td_error():
    rewards, values = torch.randn(6), torch.randn(6)
    advantages, _ = gae(rewards, values, gamma=0.9, lam=0.0)
    next_values = torch.cat([values[1:], torch.zeros(1)])
    assert torch.allclose(advantages, rewards + 0.9 * next_values - values, atol=1e-6)


def test_gae_bootstraps_truncation_but_not_termination():
    rewards, values = torch.zeros(3), torch.tensor([0.0, 0.0, 0.0])
    advantages, _ = gae(rewards, values, 1.0, 1.0, next_value=torch.tensor(5.0))
    assert torch.allclose(advantages, torch.full((3,), 5.0))
    advantages, _ = gae(rewards, values, 1.0, 1.0, dones=torch.tensor([False, False, True]), next_value=torch.tensor(5.0))
    assert torch.allclose(advantages, torch.zeros(3))


def test_gae_is_exactly_zero_on_padding_and_ignores_padded_values():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 9.0, -9.0]])  # garbage after the sequence ends
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    advantages, returns = gae(rewards, values, 1.0, 0.95, mask=mask)
    assert (advantages[0, 3:] == 0).all() and (returns[0, 3:] == 0).all()
    short, _ = gae(rewards[:, :3], values[:, :3], 1.0, 0.95)
    assert torch.allclose(advantages[:, :3], short)


def test_gae_with_zero_values_is_the_discounted_reward():
    """A zero-initialised value head makes the first advantages plain (gamma*lambda)-discounted rewards."""
    rewards = torch.tensor([0.5, -1.0, 2.0])
    advantages, _ = gae(rewards, torch.zeros(3), gamma=1.0, lam=0.95)
    assert torch.allclose(advantages, discounted_returns(rewards, 0.95))


def test_whiten_and_masked_statistics():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([1, 1, 1, 0])
    assert masked_mean(x, mask) == 2.0
    w = whiten(x, mask)
    assert w[3] == 0 and abs(float(masked_mean(w, mask))) < 1e-6
    assert torch.allclose((w[:3] ** 2).mean(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(masked_mean(whiten(x, mask, shift_mean=False), mask), torch.tensor(2.0))
    with pytest.raises(ValueError, match="at least two"):
        whiten(x, torch.tensor([1, 0, 0, 0]))
    with pytest.raises(ValueError, match="no entries"):
        masked_mean(x, torch.zeros(4))


def test_reinforce_gradient_matches_finite_differences():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    actions = torch.tensor([0, 2, 1, 2])
    advantages = torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=torch.float64)

    def loss_of(z):
        logprobs = torch.log_softmax(z, -1).gather(-1, actions[:, None]).squeeze(-1)
        return reinforce_loss(logprobs, advantages)

    loss_of(logits).backward()
    numeric = torch.zeros_like(logits)
    for i in range(4):
        for j in range(3):
            bump = torch.zeros_like(logits)
            bump[i, j] = 1e-6
            numeric[i, j] = (loss_of(logits.detach() + bump) - loss_of(logits.detach() - bump)) / 2e-6
    assert torch.allclose(logits.grad, numeric, atol=1e-6)
    # and by hand: d/dz of -A log softmax(z)_a / N = -A (onehot(a) - softmax(z)) / N
    probs = torch.softmax(logits.detach(), -1)
    by_hand = -(advantages[:, None] * (torch.nn.functional.one_hot(actions, 3) - probs)) / 4
    assert torch.allclose(logits.grad, by_hand)


def test_reinforce_does_not_backpropagate_into_the_advantages():
    logprobs = torch.tensor([-1.0, -2.0], requires_grad=True)
    baseline = torch.tensor([0.5, 0.5], requires_grad=True)
    reinforce_loss(logprobs, torch.tensor([1.0, 2.0]) - baseline).backward()
    assert baseline.grad is None


def test_ppo_ratio_is_one_and_loss_is_the_pg_loss_at_the_start():
    logprobs = torch.tensor([-1.0, -0.5, -2.0], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, 0.5])
    loss, stats = ppo_policy_loss(logprobs, logprobs.detach().clone(), advantages)
    assert stats.ratio_mean == 1.0 and stats.clip_fraction == 0.0 and stats.approx_kl == 0.0
    assert torch.allclose(loss, -advantages.mean())
    loss.backward()
    assert torch.allclose(logprobs.grad, -advantages / 3)


@pytest.mark.parametrize("advantage,log_ratio,gradient_flows", [
    (1.0, 0.5, False),   # good action already made much more likely: clipped, no push further
    (1.0, -0.5, True),   # good action made less likely: no clipping, push it back up
    (-1.0, -0.5, False),  # bad action already much less likely: clipped
    (-1.0, 0.5, True),   # bad action made more likely: the pessimistic bound keeps the gradient
])
def test_ppo_clips_only_on_the_side_that_would_overshoot(advantage, log_ratio, gradient_flows):
    old = torch.tensor([-1.0])
    logprobs = (old + log_ratio).requires_grad_()
    loss, stats = ppo_policy_loss(logprobs, old, torch.tensor([advantage]), clip=0.2)
    loss.backward()
    assert (logprobs.grad.abs().item() > 0) == gradient_flows
    assert stats.clip_fraction == 1.0


def test_ppo_losses_ignore_padding():
    logprobs = torch.tensor([[-1.0, -1.0, 5.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -0.9, -3.0]])
    advantages = torch.tensor([[1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, _ = ppo_policy_loss(logprobs, old, advantages, mask=mask)
    unpadded, _ = ppo_policy_loss(logprobs[:, :2], old[:, :2], advantages[:, :2])
    assert torch.allclose(loss, unpadded)
    loss.backward()
    assert logprobs.grad[0, 2] == 0
    with pytest.raises(ValueError, match="one shape"):
        ppo_policy_loss(logprobs, old[:, :2], advantages)


def test_value_loss_with_and_without_clipping():
    values = torch.tensor([1.0, 3.0])
    returns = torch.tensor([2.0, 2.0])
    assert torch.allclose(ppo_value_loss(values, returns), torch.tensor(0.5))
    old = torch.tensor([1.0, 1.0])
    # second value moved by 2 > clip 0.5: the clipped prediction 1.5 has error 0.25 < 1, max keeps 1
    assert torch.allclose(ppo_value_loss(values, returns, old, clip=0.5), torch.tensor(0.5 * (1.0 + 1.0) / 2))
    with pytest.raises(ValueError, match="values_old"):
        ppo_value_loss(values, returns, clip=0.5)
