r"""Learning-rate schedules and periodic evaluation, shared by every training loop in the book.

* :func:`warmup_cosine` (pretraining, behaviour cloning, ILQL): linear warm-up over ``warmup`` steps,
  then cosine decay to 10% of the peak,
  :math:`\eta_t = \eta\,\big(0.1 + 0.45\,(1 + \cos(\pi\,\tfrac{t - w}{T - w}))\big)`.
* :func:`warmup_linear_decay` (REINFORCE, PPO, DPO, reward models): a factor for ``LambdaLR``,
  :math:`\min(1, \tfrac{t+1}{w+1})\,(1 - t/T)`, the linear anneal to 0 of Ziegler et al. and CleanRL.
  Adam moves every weight by about the learning rate on its first steps whatever the gradient's
  size; the warm-up keeps that first random jump away from the reference small.
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import torch

__all__ = ["warmup_cosine", "warmup_linear_decay", "record_evaluation"]


def warmup_cosine(step: int, steps: int, lr: float, warmup: int) -> float:
    """The learning rate at ``step`` of ``steps``: linear warm-up, then cosine decay to 10% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def warmup_linear_decay(total: int, warmup: int = 0, anneal: bool = True) -> Callable[[int], float]:
    """A ``LambdaLR`` factor: linear warm-up over ``warmup`` steps, then (if ``anneal``) linear decay
    reaching 0 at step ``total``."""
    if total < 1 or warmup < 0:
        raise ValueError(f"need total >= 1 and warmup >= 0, got total={total}, warmup={warmup}")

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / (warmup + 1))
        return warm * (1.0 - step / total if anneal else 1.0)

    return factor


class _HasEvals(Protocol):
    evals: dict[str, list[float]]


def record_evaluation(history: _HasEvals, steps: list[int], evaluate: Callable | None, model: torch.nn.Module, step: int) -> None:
    """Append ``evaluate(model)``'s metrics (under ``no_grad``) to ``history.evals`` and ``step`` to
    ``steps``; nothing when ``evaluate`` is None."""
    if evaluate is None:
        return
    with torch.no_grad():
        for name, value in evaluate(model).items():
            history.evals.setdefault(name, []).append(float(value))
    steps.append(step)
