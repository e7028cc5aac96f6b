r"""Behaviour cloning on logged dialogues: maximum likelihood of the agent's tokens only.

.. math:: \mathcal L_{\text{BC}}(\theta) = -\frac{1}{\sum_{b,t} c_{b,t}} \sum_{b,t} c_{b,t}
          \log \pi_\theta(x_{b,t} \mid x_{b,<t}),

with :math:`c` the action mask: the model reads the whole dialogue but is only taught to write what
the agent wrote, never to predict the other party's replies. *Filtered* BC is the same loss on the
episodes with the highest returns (:func:`seqrl.offline.data.top_fraction`).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from ..models.gpt import GPT
from ..models.optim import adamw, gradient_step, set_learning_rate
from ..models.schedules import warmup_cosine
from ..models.training import TrainHistory, lm_loss
from ..utils import progress
from .data import check_offline_dataset, sample_batch

__all__ = ["bc_loss", "train_bc"]


def bc_loss(model: GPT, tokens: torch.Tensor, mask: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per agent token) of the agent's tokens in right-padded dialogues.

    It is :func:`seqrl.models.training.lm_loss` with the action mask as the loss mask: the inputs are
    every real token, the targets only the agent's.
    """
    if not tokens.shape == mask.shape == action_mask.shape:
        raise ValueError(f"tokens, mask and action_mask must have one shape, got {tuple(tokens.shape)}, {tuple(mask.shape)}, {tuple(action_mask.shape)}")
    return lm_loss(model, tokens, action_mask * mask)


def train_bc(
    model: GPT,
    dataset: Any,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    warmup: int = 20,
    seed: int = 0,
    desc: str = "behaviour cloning",
) -> TrainHistory:
    """Train ``model`` in place by behaviour cloning on ``dataset`` (an offline dataset of episodes).

    AdamW, gradient clipping at 1, :func:`warmup_cosine`; batches drawn from a generator seeded by
    ``seed``, so the same call gives the same model.
    """
    check_offline_dataset(dataset)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = adamw(model.parameters(), lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    history = TrainHistory()
    start = time.perf_counter()
    model.train()
    for step in progress(range(steps), desc=desc):
        batch = sample_batch(dataset, batch_size, generator, model.device)
        set_learning_rate(optimizer, warmup_cosine(step, steps, lr, warmup))
        loss = bc_loss(model, batch.tokens, batch.mask, batch.action_mask)
        gradient_step(optimizer, loss, model.parameters(), 1.0)
        history.steps.append(step)
        history.train_loss.append(float(loss.detach()))
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
