"""Reinforcement-learning pieces shared by every part of the book (written once, used everywhere)."""
from .returns import discounted_returns

__all__ = ["discounted_returns"]
