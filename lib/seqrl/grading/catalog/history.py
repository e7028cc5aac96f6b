"""Exercise ex04: a frame stack over stored episodes, reset at episode boundaries."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..checks import Case, Exercise, WrongAnswer

__all__ = ["EXERCISES"]


# ---------------------------------------------------------------------------------------------
# ex04: x_t = [o_{t-k+1}, ..., o_t] (oldest first), zeros before the episode's first observation


def _frame_stack_reference(observations: torch.Tensor, dones: torch.Tensor, k: int) -> torch.Tensor:
    from seqrl.pomdp.wrappers import frame_stack

    return frame_stack(observations, dones, k)


def _stack_with(observations: torch.Tensor, dones: torch.Tensor | None, lags: list[int], pad: str = "zeros",
                episode_starts_at_done: bool = False) -> torch.Tensor:
    """A loop version parameterised by the mistakes: which lags fill the slots (in slot order),
    what fills steps outside the episode, and where a new episode starts."""
    N, T, d = observations.shape
    done = torch.zeros(N, T, dtype=torch.bool) if dones is None else dones.bool()
    out = observations.new_zeros(N, T, len(lags) * d)
    for n in range(N):
        episode, start = [], 0
        for t in range(T):
            if episode_starts_at_done and done[n, t]:
                start = t
            episode.append(start)
            if not episode_starts_at_done and done[n, t]:
                start = t + 1
        for t in range(T):
            for slot, lag in enumerate(lags):
                s = t - lag
                inside = 0 <= s < T and episode[s] == episode[t]
                if inside:
                    out[n, t, slot * d:(slot + 1) * d] = observations[n, s]
                elif pad == "first":
                    out[n, t, slot * d:(slot + 1) * d] = observations[n, episode[t]]
    return out


def _no_reset(observations, dones, k):
    """Ignores dones: the window reaches back into the previous episode."""
    return _frame_stack_reference(observations, None, k)


def _excludes_current(observations, dones, k):
    """Slots hold o_{t-k} .. o_{t-1}: the window stops one step early."""
    return _stack_with(observations, dones, list(range(k, 0, -1)))


def _includes_future(observations, dones, k):
    """Slots hold o_{t-k+2} .. o_{t+1}: the window peeks one step ahead."""
    return _stack_with(observations, dones, list(range(k - 2, -2, -1)))


def _newest_first(observations, dones, k):
    """Slots hold o_t, o_{t-1}, ..., o_{t-k+1}: the right observations in reversed order."""
    return _stack_with(observations, dones, list(range(k)))


def _pads_with_first_observation(observations, dones, k):
    """Steps before the episode's start are filled with its first observation instead of zeros."""
    return _stack_with(observations, dones, list(range(k - 1, -1, -1)), pad="first")


def _new_episode_at_the_done_step(observations, dones, k):
    """The step marked done is taken as the first step of the next episode (boundary one step early)."""
    return _stack_with(observations, dones, list(range(k - 1, -1, -1)), episode_starts_at_done=True)


def _sequence(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1)  # (1, T, 1)


def _flags(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def frame_stack_exercise() -> Exercise:
    two_rows = torch.arange(1.0, 17.0).reshape(2, 4, 2)  # N = 2, T = 4, d = 2, all entries distinct
    cases = [
        Case((_sequence([1, 2, 3, 4, 5]), _flags([[0, 0, 0, 0, 0]]), 3), {}, "one episode of 5 steps, k = 3"),
        Case((_sequence([1, 2, 3, 4, 5, 6]), _flags([[0, 0, 1, 0, 0, 0]]), 3), {},
             "two episodes in one row (done at t = 2), k = 3"),
        Case((two_rows, _flags([[0, 1, 0, 1], [1, 0, 0, 0]]), 2), {}, "two rows, 2-dimensional observations, k = 2"),
        Case((_sequence([1, 2, 3, 4]), _flags([[0, 0, 0, 1]]), 1), {}, "k = 1: the memoryless view"),
        Case((_sequence([7, 8, 9]), _flags([[1, 1, 0]]), 4), {}, "episodes of one step, k longer than any episode"),
    ]
    wrong_answers = [
        WrongAnswer(
            "no reset at episode boundaries",
            _no_reset,
            "the window must not reach back across a done flag: after dones[n, t] the next step starts a new "
            "episode, so observations from steps <= t are zeros in its window (they belong to another episode).",
        ),
        WrongAnswer(
            "window excludes the current observation",
            _excludes_current,
            "the window ends with the current observation: its last slot is o_t, so the slots hold o_{t-k+1} .. o_t.",
        ),
        WrongAnswer(
            "window includes a future observation",
            _includes_future,
            "the window may only hold the past and the present: o_{t-k+1} .. o_t; nothing after step t.",
        ),
        WrongAnswer(
            "newest observation first",
            _newest_first,
            "the slots go oldest first: slot 0 holds o_{t-k+1} and the last slot holds the current o_t.",
        ),
        WrongAnswer(
            "padded with the episode's first observation",
            _pads_with_first_observation,
            "slots before the episode's first step are zeros, not copies of the first observation "
            "(a copy looks like a real, earlier observation).",
        ),
        WrongAnswer(
            "new episode starts at the done step",
            _new_episode_at_the_done_step,
            "dones[n, t] marks the LAST step of an episode: step t still belongs to it, the new episode starts at t + 1.",
        ),
    ]
    return Exercise("frame_stack", _frame_stack_reference, cases, wrong_answers)


EXERCISES: dict[str, Callable[[], Exercise]] = {
    "frame_stack": frame_stack_exercise,
}
