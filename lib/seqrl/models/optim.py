r"""The optimisers every trainer in seqrl uses: PyTorch's Adam and AdamW, multi-tensor.

Adam (Kingma & Ba 2015) keeps running moments of the gradient :math:`g_t` of each parameter,

.. math:: m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,

and steps :math:`\theta_t = \theta_{t-1} - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)` with the
bias-corrected :math:`\hat m_t = m_t / (1-\beta_1^t)`, :math:`\hat v_t = v_t / (1-\beta_2^t)`.
AdamW (Loshchilov & Hutter 2019) decays the weights apart from the gradient:
:math:`\theta \leftarrow \theta (1 - \eta\lambda)` before the step.

Why a module for two constructors: on the CPU PyTorch's default is a Python loop over the
parameters, one small kernel per parameter and operation; ``foreach=True`` runs each operation on
all parameters at once. For the book's tiny models that is 10-15 % of a training step saved, and
the numbers are bit-for-bit those of the loop (a test checks it). On CUDA ``foreach`` is already
the default. (``fused=True`` is faster still on some machines but rounds differently.)
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

__all__ = ["adam", "adamw", "gradient_step", "set_learning_rate"]


def adam(params: Iterable[Any], lr: float, **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam`` over ``params`` (tensors or param-group dicts), multi-tensor."""
    return torch.optim.Adam(params, lr=lr, foreach=True, **kwargs)


def adamw(params: Iterable[Any], lr: float, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``params`` (tensors or param-group dicts), multi-tensor."""
    return torch.optim.AdamW(params, lr=lr, foreach=True, **kwargs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` (a schedule's value for this step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters: Iterable[torch.Tensor] | None = None,
                  max_grad_norm: float | None = None) -> None:
    r"""One step of ``optimizer`` on ``loss``: clear the gradients, backpropagate, rescale the
    gradient of ``parameters`` so that its global norm is at most ``max_grad_norm``
    (:math:`g \leftarrow g \cdot \min(1, c / \lVert g \rVert_2)`; no clipping if ``None``), step.
    The one copy of these lines every trainer in seqrl runs."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        if parameters is None:
            raise ValueError("clipping the gradient norm needs the parameters to clip")
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
