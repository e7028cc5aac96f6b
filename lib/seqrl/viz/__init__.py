"""Plots and interactive explorers used by the chapters."""
from .plots import moving_average, plot_training_curve
from .style import PALETTE, caption, use_style

__all__ = ["PALETTE", "caption", "moving_average", "plot_training_curve", "use_style"]
