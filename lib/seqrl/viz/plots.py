"""Plots shared by the chapters. Each takes an optional ``ax`` and returns it, axes labelled."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..models.training import TrainHistory

__all__ = ["plot_training_curve", "moving_average"]


def moving_average(values, window: int) -> np.ndarray:
    """Mean of each run of ``window`` consecutive values (length ``len(values) - window + 1``)."""
    values = np.asarray(values, dtype=float)
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if len(values) < window:
        return values.copy()
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def plot_training_curve(history: TrainHistory, floor: float | None = None, smooth: int = 20, ax=None, title: str | None = None):
    """Training loss (smoothed), validation loss and an optional entropy floor, in nats per token."""
    if ax is None:
        _, ax = plt.subplots()
    steps = np.asarray(history.steps)
    smoothed = moving_average(history.train_loss, smooth)
    ax.plot(steps[len(steps) - len(smoothed):], smoothed, label=f"train (mean of {smooth} steps)")
    if history.val_loss:
        ax.plot(history.val_steps, history.val_loss, "o-", label="validation")
    if floor is not None:
        ax.axhline(floor, color="black", linestyle="--", linewidth=1, label="entropy floor of the data")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax
