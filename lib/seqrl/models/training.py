"""Maximum-likelihood training of a GPT on token sequences (pretraining, SFT, behaviour cloning).

.. math:: \\mathcal L(\\theta) = -\\frac{1}{\\sum_{b,t} m_{b,t+1}} \\sum_{b,t} m_{b,t+1}
          \\log \\pi_\\theta(x_{b,t+1} \\mid x_{b,\\le t})

with :math:`m` the mask of real (non-padding) tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..text.batching import IGNORE_INDEX, lm_inputs_and_targets
from ..utils import evaluating, progress
from .gpt import GPT
from .optim import adamw, gradient_step, set_learning_rate
from .schedules import warmup_cosine

__all__ = ["lm_loss", "TrainHistory", "train_language_model"]


def lm_loss(model: GPT, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per token) over the real tokens of a right-padded batch."""
    inputs, targets = lm_inputs_and_targets(tokens, mask)
    logits = model(inputs, attention_mask=None).logits  # right padding never precedes a real token
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


@dataclass
class TrainHistory:
    """Losses recorded during training, in nats per token."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "steps": self.steps,
            "train_loss": self.train_loss,
            "val_steps": self.val_steps,
            "val_loss": self.val_loss,
            "seconds": self.seconds,
        }

    @staticmethod
    def from_dict(d: dict) -> "TrainHistory":
        return TrainHistory(**d)


@torch.no_grad()
def _evaluate(model: GPT, tokens: torch.Tensor, mask: torch.Tensor, batch_size: int) -> float:
    total, count = 0.0, 0
    with evaluating(model):
        for start in range(0, len(tokens), batch_size):
            x, m = tokens[start : start + batch_size], mask[start : start + batch_size]
            n = int(m[:, 1:].sum())
            total += float(lm_loss(model, x, m)) * n
            count += n
    return total / max(count, 1)


def train_language_model(
    model: GPT,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    warmup: int = 50,
    eval_every: int = 100,
    seed: int = 0,
    desc: str = "training",
) -> TrainHistory:
    """Train ``model`` in place with AdamW on right-padded ``(tokens, mask)`` pairs.

    Learning rate: linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``lr``.
    Batches are drawn with a generator seeded by ``seed``, so a run is reproducible.
    """
    import time

    tokens, mask = train
    if tokens.shape != mask.shape or tokens.dim() != 2:
        raise ValueError(f"train tokens and mask must be equal (N, T) shapes, got {tuple(tokens.shape)}, {tuple(mask.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    device = model.device
    tokens, mask = tokens.to(device), mask.to(device)
    if val is not None:
        val = (val[0].to(device), val[1].to(device))
    generator = torch.Generator().manual_seed(seed)
    optimizer = adamw(model.parameters(), lr, weight_decay=weight_decay, betas=(0.9, 0.99))

    history = TrainHistory()
    start = time.perf_counter()
    model.train()
    for step in progress(range(steps), desc=desc):
        rows = torch.randint(len(tokens), (batch_size,), generator=generator).to(device)
        batch_mask = mask[rows]
        width = int(batch_mask.sum(dim=1).max())  # trim columns that are padding for the whole batch
        set_learning_rate(optimizer, warmup_cosine(step, steps, lr, warmup))
        loss = lm_loss(model, tokens[rows, :width], batch_mask[:, :width])
        gradient_step(optimizer, loss, model.parameters(), 1.0)
        history.steps.append(step)
        history.train_loss.append(float(loss.detach()))
        if val is not None and ((step + 1) % eval_every == 0 or step == steps - 1):
            history.val_steps.append(step)
            history.val_loss.append(_evaluate(model, *val, batch_size=256))
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
