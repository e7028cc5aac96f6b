"""Exercise ex01: discounted returns (reward-to-go)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..checks import Case, Exercise, WrongAnswer

__all__ = ["EXERCISES"]


# ---------------------------------------------------------------------------------------------
# ex01: discounted returns (reward-to-go), G_t = sum_{k=t}^{T-1} gamma^(k-t) r_k


def _returns_reference(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    from seqrl.rl import discounted_returns

    return discounted_returns(rewards, gamma)


def _discount_matrix(length: int, gamma: float, exponent: Callable[[int, int], int]) -> torch.Tensor:
    """``M[t, k] = gamma ** exponent(t, k)`` for ``k >= t``, else 0; then ``returns = M @ rewards``."""
    matrix = torch.zeros(length, length, dtype=torch.float64)
    for t in range(length):
        for k in range(t, length):
            matrix[t, k] = float(gamma) ** exponent(t, k)
    return matrix


def _weighted(rewards: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return (matrix @ rewards.double()).to(rewards.dtype)  # (T,)


def _excludes_current_reward(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{k>t} gamma^(k-t) r_k: the sum starts one step late."""
    return _returns_reference(rewards, gamma) - rewards


def _stored_before_adding(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """returns[t] = G_{t+1}: the running return is stored before r_t is added (shifted one step)."""
    returns = _returns_reference(rewards, gamma)
    return torch.cat([returns[1:], torch.zeros_like(returns[:1])])


def _undiscounted(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{k>=t} r_k: gamma ignored."""
    return _returns_reference(rewards, 1.0)


def _discount_from_episode_start(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{k>=t} gamma^k r_k: discounted from step 0 instead of from step t."""
    return _weighted(rewards, _discount_matrix(len(rewards), gamma, lambda t, k: k))


def _total_return_everywhere(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = G_0 for every t: the episode's return copied to every step."""
    return _returns_reference(rewards, gamma)[0].expand_as(rewards).clone()


def _reversed_order(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """The right returns, computed backwards and appended to a list that was never reversed."""
    return torch.flip(_returns_reference(rewards, gamma), dims=[0])


def _accumulated_forwards(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{k<=t} gamma^(t-k) r_k: the recursion run from the start, summing past rewards."""
    return torch.flip(_returns_reference(torch.flip(rewards, dims=[0]), gamma), dims=[0])


def discounted_returns_exercise() -> Exercise:
    """ex01: ``discounted_returns(rewards, gamma)`` on a 1-D tensor of rewards."""

    def case(rewards: list[float], gamma: float, what: str) -> Case:
        shown = ", ".join(f"{reward:g}" for reward in rewards)
        return Case((torch.tensor(rewards, dtype=torch.float32), gamma), {}, f"{what}, rewards [{shown}], gamma {gamma:g}")

    cases = [
        case([1.0], 0.9, "one step"),
        case([1.0, 2.0, 3.0], 0.9, "three steps"),
        case([1.0, 2.0, 3.0, 4.0], 0.0, "gamma = 0 (returns are the rewards)"),
        case([1.0, 0.0, 0.0, 2.0], 1.0, "gamma = 1 (plain sums)"),
        case([0.0, 0.0, 0.0, 1.0], 0.9, "a single reward at the end"),
        case([-1.0, 2.0, -3.0, 0.5], 0.5, "negative rewards"),
        case([0.5, -1.0, 0.0, 2.0, 0.0, 1.0], 0.99, "six steps"),
    ]
    wrong_answers = [
        WrongAnswer(
            "reward-to-go off by one (r_t left out)",
            _excludes_current_reward,
            "G_t includes the reward of step t itself: the sum runs over k = t, ..., T-1, so G_{T-1} = r_{T-1}.",
        ),
        WrongAnswer(
            "returns shifted by one step (G_{t+1} stored at t)",
            _stored_before_adding,
            "add r_t to the running return before storing it: G_t = r_t + gamma * G_{t+1}, then returns[t] = G_t.",
        ),
        WrongAnswer(
            "no discount (gamma treated as 1)",
            _undiscounted,
            "each step further in the future multiplies the reward by gamma once more: multiply the running return by gamma.",
        ),
        WrongAnswer(
            "discount counted from the start of the episode",
            _discount_from_episode_start,
            "the discount is gamma^(k-t), counted from the current step t, not gamma^k; so the reward of step t has weight 1.",
        ),
        WrongAnswer(
            "the total return copied to every step",
            _total_return_everywhere,
            "reward-to-go at step t only sums the rewards from t on; it is different at every step, G_{T-1} = r_{T-1}.",
        ),
        WrongAnswer(
            "returns in reversed order",
            _reversed_order,
            "you computed the returns from the last step backwards; store G_t at index t (or reverse the list at the end).",
        ),
        WrongAnswer(
            "rewards accumulated forwards (past instead of future)",
            _accumulated_forwards,
            "the return sums future rewards: run the recursion G_t = r_t + gamma * G_{t+1} from t = T-1 down to 0.",
        ),
    ]
    return Exercise("discounted_returns", _returns_reference, cases, wrong_answers)


EXERCISES: dict[str, Callable[[], Exercise]] = {
    "discounted_returns": discounted_returns_exercise,
}
