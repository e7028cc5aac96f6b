r"""History wrappers: what a policy is allowed to read of the history :math:`h_t = (o_0, \dots, o_t)`.

* :func:`frame_stack` turns stored observation sequences into windows of the last :math:`k`
  observations, :math:`x_t = [o_{t-k+1}, \dots, o_t]` (oldest first), zero-padded before an
  episode's first observation and never reaching across an episode boundary. With :math:`k=1` it is
  the memoryless view :math:`x_t = o_t` (DQN's Atari agents used :math:`k=4`, Mnih et al. 2015).
* :func:`push_frame` is the same window updated online, one observation at a time.
* :class:`FrameStack` and :class:`FullHistory` wrap a batched environment (e.g. :class:`~seqrl.pomdp.TMaze`)
  so that its observations *are* the window or the whole history so far: the POMDP seen as an MDP
  over (partial) histories.

Shapes: observations ``(N, T, d)``; ``dones (N, T)`` true at the *last* step of an episode, so the
observation at ``t + 1`` starts a new one.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["frame_stack", "push_frame", "episode_ids", "FrameStack", "FullHistory"]


def episode_ids(dones: torch.Tensor) -> torch.Tensor:
    r"""Index of the episode each step belongs to, counted per row: :math:`e_t = \sum_{s<t} d_s`.

    ``dones (N, T)`` -> ``(N, T)`` long. The step marked done still belongs to its episode.
    """
    ended = dones.long().cumsum(dim=1)
    return torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], dim=1)


def frame_stack(observations: torch.Tensor, dones: torch.Tensor | None, k: int) -> torch.Tensor:
    r"""The last ``k`` observations at every step, oldest first, zeros before an episode's start.

    .. math:: x_t = \big[\tilde o_{t-k+1}, \dots, \tilde o_{t-1}, o_t\big], \qquad
              \tilde o_s = o_s \text{ if } s \ge 0 \text{ and } s \text{ is in } t\text{'s episode, else } 0.

    Args:
        observations: ``(N, T, d)`` float observations (``N`` rows, each a stream of episodes).
        dones: ``(N, T)`` booleans, true at an episode's last step; ``None``: one episode per row.
        k: window length, ``k >= 1``.

    Returns:
        ``(N, T, k * d)``: slot ``j`` (features ``j*d .. (j+1)*d - 1``) holds :math:`o_{t-k+1+j}`.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if observations.dim() != 3:
        raise ValueError(f"observations must have shape (N, T, obs_dim), got {tuple(observations.shape)}")
    N, T, d = observations.shape
    if dones is None:
        dones = torch.zeros(N, T, dtype=torch.bool, device=observations.device)
    if dones.shape != (N, T):
        raise ValueError(f"dones must have shape (N, T) = {(N, T)}, got {tuple(dones.shape)}")
    episode = episode_ids(dones.to(observations.device))
    slots = []
    for lag in range(k - 1, -1, -1):  # oldest first
        shifted = torch.cat([observations.new_zeros(N, min(lag, T), d), observations[:, : T - lag]], dim=1)
        shifted_episode = torch.cat([episode.new_full((N, min(lag, T)), -1), episode[:, : T - lag]], dim=1)
        same_episode = (shifted_episode == episode).unsqueeze(-1)  # (N, T, 1)
        slots.append(shifted * same_episode)
    return torch.cat(slots, dim=-1)  # (N, T, k * d)


def push_frame(window: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
    """Online :func:`frame_stack`: drop the oldest of ``window (N, k, d)``, append ``observation (N, d)``.

    Start from zeros (``torch.zeros(N, k, d)``) and zero a row when its episode ends.
    """
    if window.dim() != 3 or observation.shape != (window.shape[0], window.shape[2]):
        raise ValueError(
            f"window (N, k, d) and observation (N, d) must agree, got {tuple(window.shape)} and {tuple(observation.shape)}"
        )
    return torch.cat([window[:, 1:], observation[:, None]], dim=1)


class FrameStack:
    """A batched environment whose observation is the window of its last ``k`` observations.

    ``reset`` and ``step`` return ``(N, k * d)`` windows (oldest first, zero-padded at an episode's
    start), the same vectors :func:`frame_stack` computes from the stored sequence.
    """

    def __init__(self, env: Any, k: int) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.env, self.k = env, k
        self.n_envs, self.n_actions, self.max_steps = env.n_envs, env.n_actions, env.max_steps
        self.obs_dim = k * env.obs_dim
        self._window: torch.Tensor | None = None

    def reset(self, **kwargs) -> tuple[torch.Tensor, dict]:
        obs, info = self.env.reset(**kwargs)
        self._window = push_frame(obs.new_zeros(obs.shape[0], self.k, obs.shape[1]), obs)
        return self._window.flatten(1), info

    def step(self, actions: torch.Tensor):
        if self._window is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._window = push_frame(self._window, obs)
        return self._window.flatten(1), reward, terminated, truncated, info


class FullHistory:
    """A batched environment whose observation is the whole history so far, ``(N, t + 1, d)``.

    The history grows by one observation per step; rows whose episode has ended keep growing with
    the (ignored) observations the environment returns. This is the input of a policy with perfect
    memory (e.g. a transformer re-reading its context); :class:`~seqrl.rl.policies.GPTTrunk` does
    the same with a key/value cache instead of re-reading.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.n_envs, self.n_actions, self.max_steps, self.obs_dim = env.n_envs, env.n_actions, env.max_steps, env.obs_dim
        self._history: torch.Tensor | None = None

    def reset(self, **kwargs) -> tuple[torch.Tensor, dict]:
        obs, info = self.env.reset(**kwargs)
        self._history = obs[:, None]
        return self._history, info

    def step(self, actions: torch.Tensor):
        if self._history is None:
            raise RuntimeError("call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._history = torch.cat([self._history, obs[:, None]], dim=1)
        return self._history, reward, terminated, truncated, info
