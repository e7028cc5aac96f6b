r"""CartPole with its velocities hidden: the standard benchmark turned into a POMDP.

Gymnasium's ``CartPole-v1`` observes :math:`(x, \dot x, \theta, \dot\theta)`, a Markov state. Hide
the two velocities and the agent sees only the cart's position and the pole's angle,
:math:`o_t = (x_t, \theta_t)`: one frame cannot tell a pole swinging left from one swinging right,
but two frames can (:math:`\dot\theta \approx (\theta_t - \theta_{t-1})/\tau`), and so can any
memory of the history. (The same task is in Bakker 2002's and in POPGym's memory benchmarks.)

* :class:`HideVelocities` is a gymnasium ``ObservationWrapper`` for the single ``CartPole-v1`` env
  (``gymnasium.make("CartPole-v1")``).
* :class:`MaskedCartPole` runs ``n_envs`` episodes at once with gymnasium's own vectorised
  CartPole (``CartPoleVectorEnv``, the same physics) behind the batched, tensor-valued API of
  :mod:`seqrl.rl.pg`: no auto-reset, a finished episode stays finished (reward 0), and
  ``info["success"]`` marks episodes that lasted ``max_steps``.
"""
from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

__all__ = ["HideVelocities", "MaskedCartPole", "VISIBLE"]

VISIBLE = (0, 2)  # x and theta; the velocities are indices 1 and 3


class HideVelocities(gymnasium.ObservationWrapper):
    r"""``CartPole-v1`` observing :math:`(x, \theta)` only."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        box = env.observation_space
        if not isinstance(box, gymnasium.spaces.Box) or box.shape != (4,):
            raise ValueError(f"HideVelocities wraps a CartPole env with 4-dimensional observations, got {box}")
        self.observation_space = gymnasium.spaces.Box(box.low[list(VISIBLE)], box.high[list(VISIBLE)], dtype=box.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[list(VISIBLE)]


class MaskedCartPole:
    """``n_envs`` CartPole episodes at once, observing ``(x, theta)`` (or all four with ``hide_velocities=False``).

    Args:
        n_envs: episodes run in parallel.
        max_steps: the step limit (``CartPole-v1`` uses 500; the default 200 is ``CartPole-v0``'s,
            enough to tell balancing from falling at a fifth of the cost).
        hide_velocities: observe only position and angle (the POMDP) or the full state (the MDP).
            Observations are divided by the failure thresholds (2.4 for positions, 12 degrees for
            angles), so position and angle lie in [-1, 1] while the pole is up.
        device: where the returned tensors live.
    """

    n_actions = 2

    def __init__(self, n_envs: int = 64, max_steps: int = 200, hide_velocities: bool = True,
                 device: torch.device | str | None = None) -> None:
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        self.n_envs, self.max_steps, self.hide_velocities = n_envs, max_steps, hide_velocities
        self.obs_dim = len(VISIBLE) if hide_velocities else 4
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self._env = CartPoleVectorEnv(num_envs=n_envs, max_episode_steps=max_steps)
        x_limit, theta_limit = self._env.x_threshold, self._env.theta_threshold_radians
        self._scale = np.array([x_limit, x_limit, theta_limit, theta_limit], dtype=np.float32)
        self._done = np.ones(n_envs, dtype=bool)

    def __repr__(self) -> str:
        return f"MaskedCartPole(n_envs={self.n_envs}, max_steps={self.max_steps}, hide_velocities={self.hide_velocities})"

    def _observe(self, state: np.ndarray) -> torch.Tensor:
        state = state / self._scale  # x / 2.4 and theta / 12 degrees: both in [-1, 1] until the episode fails
        obs = state[:, list(VISIBLE)] if self.hide_velocities else state
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[torch.Tensor, dict]:
        state, _ = self._env.reset(seed=seed)
        self._done = np.zeros(self.n_envs, dtype=bool)
        return self._observe(state), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Push left (0) or right (1); reward 1 per step survived, 0 once an episode has ended."""
        actions = np.asarray(torch.as_tensor(actions).cpu(), dtype=np.int64)
        if actions.shape != (self.n_envs,):
            raise ValueError(f"actions must have shape ({self.n_envs},), got {actions.shape}")
        state, reward, terminated, truncated, _ = self._env.step(actions)
        active = ~self._done
        terminated, truncated = terminated & active, truncated & active & ~terminated
        self._done = self._done | terminated | truncated
        as_tensor = lambda x, dtype: torch.as_tensor(x, dtype=dtype, device=self.device)  # noqa: E731
        return (self._observe(state), as_tensor(reward * active, torch.float32), as_tensor(terminated, torch.bool),
                as_tensor(truncated, torch.bool), {"success": as_tensor(truncated, torch.bool)})
