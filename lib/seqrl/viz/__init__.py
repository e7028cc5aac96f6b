"""Plots and interactive explorers used by the chapters."""
from .style import caption, use_style, PALETTE

__all__ = ["caption", "use_style", "PALETTE"]
