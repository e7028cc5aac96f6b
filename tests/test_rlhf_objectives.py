"""The RLHF objectives against hand-computed values and their pitfalls (score placement, pads, stop-gradients)."""
import math

import pytest
import torch

from seqrl.rlhf import bradley_terry_loss, dpo_loss, kl_penalised_rewards, preference_probability
from seqrl.text import last_token_index


def test_bradley_terry_loss_matches_the_hand_computed_value():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = -(math.log(1 / (1 + math.exp(-1.0))) + math.log(1 / (1 + math.exp(1.0)))) / 2
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, abs=1e-6)
    assert preference_probability(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(0.5)


def test_bradley_terry_loss_stays_finite_for_huge_margins():
    loss = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(400.0)


def test_bradley_terry_gradient_matches_finite_differences():
    chosen = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([0.1, 0.4], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c: bradley_terry_loss(c, rejected), (chosen,))


def test_last_token_index_finds_eos_not_the_slot_after_it():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 3, 0]
    with pytest.raises(ValueError, match="no real token"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_kl_penalised_rewards_put_the_score_on_the_last_real_token_and_zero_on_pads():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0, -9.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0, -0.1], [-2.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    rewards, kl = kl_penalised_rewards(logprobs, ref, torch.tensor([5.0, -1.0]), mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 5.0, 0.0], [-0.1, 0.0, 0.0, -1.0]]))


def test_kl_penalised_rewards_carry_no_gradient():
    logprobs = torch.randn(2, 3, requires_grad=True)
    rewards, _ = kl_penalised_rewards(logprobs, torch.randn(2, 3, requires_grad=True), torch.zeros(2), torch.ones(2, 3), 0.2)
    assert not rewards.requires_grad


def test_kl_penalised_rewards_reject_bad_shapes():
    with pytest.raises(ValueError, match="one per response"):
        kl_penalised_rewards(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3), 0.1)
    with pytest.raises(ValueError, match="kl_coef"):
        kl_penalised_rewards(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3), -1.0)


def test_dpo_loss_is_bradley_terry_on_the_implicit_reward_with_a_frozen_reference():
    pc, pr = torch.tensor([-1.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    rc, rr = torch.tensor([-1.5], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert chosen.item() == pytest.approx(0.25) and rejected.item() == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.75))), abs=1e-6)
    loss.backward()
    assert rc.grad is None and rr.grad is None
    assert pc.grad.item() < 0 < pr.grad.item()
