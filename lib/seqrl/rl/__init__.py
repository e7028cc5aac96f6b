"""Reinforcement-learning pieces shared by every part of the book (written once, used everywhere):
returns, advantages (GAE) and the policy-gradient losses."""
from .advantages import gae, masked_mean, masked_var, whiten
from .losses import PPOStats, ppo_policy_loss, ppo_value_loss, reinforce_loss
from .returns import discounted_returns

__all__ = [
    "PPOStats",
    "discounted_returns",
    "gae",
    "masked_mean",
    "masked_var",
    "ppo_policy_loss",
    "ppo_value_loss",
    "reinforce_loss",
    "whiten",
]
