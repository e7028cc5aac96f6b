"""The multi-tensor optimisers of seqrl.models.optim: the same numbers as PyTorch's loop, and Adam's first step by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqrl.models import GPT, GPTConfig
from seqrl.models.optim import adam, adamw, gradient_step, set_learning_rate


def _train(make_optimizer, steps: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=12, n_layer=1, n_head=2, n_embd=16))
    optimizer = make_optimizer(model.parameters())
    data = torch.randint(0, 11, (8, 13), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        logits = model(data[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, 11), data[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("ours,loop", [
    (lambda p: adam(p, 3e-3), lambda p: torch.optim.Adam(p, lr=3e-3, foreach=False)),
    (lambda p: adamw(p, 3e-3, weight_decay=0.1, betas=(0.9, 0.99)),
     lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.1, betas=(0.9, 0.99), foreach=False)),
])
def test_multi_tensor_optimisers_give_the_loops_numbers_bit_for_bit(ours, loop):
    assert torch.equal(_train(ours), _train(loop))


def test_adams_first_step_moves_each_weight_by_the_learning_rate_against_the_gradient_sign():
    # m_1 = (1-b1) g, v_1 = (1-b2) g^2; bias-corrected m/sqrt(v) = g/|g| = sign(g): the step is -lr * sign(g).
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    optimizer = adamw([w], 0.1, weight_decay=0.0, eps=1e-12)
    (w * torch.tensor([3.0, -0.01, 7.0])).sum().backward()
    optimizer.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.9, 0.4]))


def test_adamw_decays_the_weights_apart_from_the_gradient():
    w = torch.tensor([2.0, -4.0], requires_grad=True)
    optimizer = adamw([w], 0.1, weight_decay=0.5)
    w.grad = torch.zeros(2)  # no gradient: only the decay w <- w (1 - lr * wd) acts
    optimizer.step()
    torch.testing.assert_close(w.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.1 * 0.5))


def test_gradient_step_clips_the_global_norm_then_steps():
    # gradient (3, 4) has norm 5; clipped to norm 1 it is (0.6, 0.8); plain SGD at lr 1 moves w by minus that.
    w = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=1.0)
    gradient_step(optimizer, (w * torch.tensor([3.0, 4.0])).sum(), [w], max_grad_norm=1.0)
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8]))
    gradient_step(optimizer, (w * torch.tensor([3.0, 4.0])).sum())  # no clipping: the full gradient, not added to the old one
    torch.testing.assert_close(w.detach(), torch.tensor([-3.6, -4.8]))


def test_gradient_step_refuses_to_clip_without_the_parameters():
    w = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match="parameters"):
        gradient_step(torch.optim.SGD([w], lr=1.0), w.sum(), max_grad_norm=1.0)


def test_set_learning_rate_sets_every_group():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = adam([{"params": [a]}, {"params": [b], "lr": 0.5}], 0.1)
    set_learning_rate(optimizer, 0.01)
    assert [group["lr"] for group in optimizer.param_groups] == [0.01, 0.01]
