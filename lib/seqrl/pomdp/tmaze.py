r"""The T-maze (Bakker 2002), the standard test of *long* memory, as a vectorised torch environment.

The agent walks east along a corridor and must turn at its end. The way to go is shown once, by a
cue in the first cell; every corridor cell after it looks the same::

    cue  c  c  c  ...  c  J        J: the junction; turning LEFT (north) or RIGHT (south) ends the episode
    t=0  1  2  3       L-1 L       (with no detours the junction is reached at step L)

``length`` :math:`L` is the number of FORWARD moves from the cue to the junction, so at the junction
the cue is :math:`L` observations old. Rewards: ``correct_reward`` for the turn that matches the cue,
``wrong_reward`` for the other one, and ``-step_cost`` on every step (turning against a corridor
wall or going FORWARD into the junction's wall leaves the agent where it is). An episode is cut after
``max_steps`` steps (truncation, a failure).

Observations are 4 bits, ``[cue LEFT, cue RIGHT, corridor, junction]``. A policy that sees only the
last :math:`k` observations cannot tell the two cues apart at the junction unless :math:`k > L`, so
its success rate is at most 1/2 (:func:`window_success_bound`); a policy with memory can reach 1.

The environment runs ``n_envs`` episodes at once on one device. It follows gymnasium's vector API
(``reset(seed=...) -> (obs, info)``, ``step(actions) -> (obs, reward, terminated, truncated, info)``)
with torch tensors, without auto-reset: a finished episode stays finished (reward 0) until the next
``reset``, so a batch of rows is a batch of whole episodes.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["TMaze", "FORWARD", "LEFT", "RIGHT", "ACTION_NAMES", "OBS_NAMES", "window_success_bound"]

FORWARD, LEFT, RIGHT = 0, 1, 2
ACTION_NAMES = ("forward", "left", "right")
OBS_NAMES = ("cue left", "cue right", "corridor", "junction")


def window_success_bound(k: int | None, length: int) -> float:
    r"""Best success rate of a policy that reads only the last ``k`` observations (``None``: all).

    The cue is :math:`L` observations before the junction's, so a window of :math:`k \le L` never
    holds it there: both cues produce the same window, any turn is right for exactly one of them,
    and with cues drawn 50/50 the success rate is at most 1/2. With :math:`k > L` (or the full
    history) it is 1.
    """
    if length < 1:
        raise ValueError(f"the corridor length must be at least 1, got {length}")
    if k is not None and k < 1:
        raise ValueError(f"a window holds at least one observation, got k={k}")
    return 1.0 if k is None or k > length else 0.5


class TMaze:
    """``n_envs`` T-maze episodes stepped together (see the module docstring for the rules).

    Args:
        length: :math:`L \\ge 1`, FORWARD moves from the cue to the junction.
        n_envs: episodes run in parallel.
        max_steps: step limit per episode (default :math:`3(L+1)`, room for a random walker to
            reach the junction).
        correct_reward, wrong_reward, step_cost: the rewards (defaults: +1, -0.1, 0.01; Bakker used
            +4 and -0.1). A wrong turn that costs little makes guessing better than dithering, so a
            policy without memory turns at once, at random, rather than bumping into the wall.
        device: where the tensors live (default: CPU).
    """

    obs_dim = 4
    n_actions = 3

    def __init__(
        self,
        length: int,
        n_envs: int = 128,
        max_steps: int | None = None,
        correct_reward: float = 1.0,
        wrong_reward: float = -0.1,
        step_cost: float = 0.01,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an int >= 1, got {length!r}")
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
        max_steps = 3 * (length + 1) if max_steps is None else max_steps
        if not isinstance(max_steps, int) or max_steps < length + 1:
            raise ValueError(f"max_steps must be an int >= length + 1 = {length + 1} (the shortest episode), got {max_steps!r}")
        if correct_reward <= wrong_reward:
            raise ValueError(f"the correct turn must pay more than the wrong one, got {correct_reward} <= {wrong_reward}")
        self.length, self.n_envs, self.max_steps = length, n_envs, max_steps
        self.correct_reward, self.wrong_reward, self.step_cost = float(correct_reward), float(wrong_reward), float(step_cost)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self._generator = torch.Generator().manual_seed(0)
        zeros = torch.zeros(n_envs, dtype=torch.long, device=self.device)
        self.position, self.cue, self.t = zeros.clone(), zeros.clone(), zeros.clone()
        self.done = torch.ones(n_envs, dtype=torch.bool, device=self.device)

    def __repr__(self) -> str:
        return f"TMaze(length={self.length}, n_envs={self.n_envs}, max_steps={self.max_steps})"

    def observe(self) -> torch.Tensor:
        """``(N, 4)`` float observations of the current cells."""
        at_start, at_junction = self.position == 0, self.position == self.length
        column = torch.where(at_start, self.cue, 2 + at_junction.long())  # cue 0/1, corridor 2, junction 3
        return torch.nn.functional.one_hot(column, self.obs_dim).float()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[torch.Tensor, dict]:
        """Start ``n_envs`` new episodes; cues are drawn 50/50 (from ``seed`` if given)."""
        if seed is not None:
            self._generator.manual_seed(int(seed))
        cue = torch.randint(0, 2, (self.n_envs,), generator=self._generator)
        self.cue = cue.to(self.device)
        self.position = torch.zeros_like(self.cue)
        self.t = torch.zeros_like(self.cue)
        self.done = torch.zeros(self.n_envs, dtype=torch.bool, device=self.device)
        return self.observe(), {"cue": self.cue.clone()}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply ``(N,)`` actions in {FORWARD, LEFT, RIGHT}.

        Returns ``obs (N, 4)``, ``reward (N,)``, ``terminated (N,)`` (turned at the junction),
        ``truncated (N,)`` (hit ``max_steps``) and ``info = {"success": (N,) bool}`` (turned the
        cue's way this step). Episodes that had already ended get reward 0 and stay ended.
        """
        actions = torch.as_tensor(actions, device=self.device)
        if actions.shape != (self.n_envs,):
            raise ValueError(f"actions must have shape ({self.n_envs},), got {tuple(actions.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.n_actions):
            raise ValueError(f"actions must be in {{0, 1, 2}} (forward, left, right), got {actions.tolist()}")
        active = ~self.done
        at_junction = self.position == self.length
        turning = actions != FORWARD
        self.position = self.position + (active & ~at_junction & ~turning).long()
        terminated = active & at_junction & turning
        correct = actions == self.cue + 1  # LEFT = 1 matches cue 0, RIGHT = 2 matches cue 1
        reward = torch.where(correct, self.correct_reward, self.wrong_reward) * terminated - self.step_cost * active
        self.t = self.t + active.long()
        truncated = active & ~terminated & (self.t >= self.max_steps)
        self.done = self.done | terminated | truncated
        return self.observe(), reward, terminated, truncated, {"success": terminated & correct}
