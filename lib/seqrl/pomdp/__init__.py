"""POMDPs for chapter 01: the Tiger problem, the Bayes belief filter, exact and grid solvers, and
policies with little memory (memoryless and finite windows), all evaluated exactly or by a fast
vectorised simulator.

    from seqrl.pomdp import TigerPOMDP, solve_alpha_vectors
    solution = solve_alpha_vectors(TigerPOMDP())
    solution.value(0.5), solution.thresholds   # V*(b0) and the optimal policy
"""
from .belief import belief_update, belief_update_batch, observation_probabilities
from .cartpole import HideVelocities, MaskedCartPole  # noqa: F401 (chapter 03)
from .corridor import ShortCorridorEnv, corridor_model, memoryless_goal_probability, memoryless_value  # noqa: F401 (chapter 02)
from .memoryless import (
    WindowPolicy,
    WindowPolicySolution,
    WindowSpace,
    best_memoryless_policy,
    best_window_policy,
    evaluate_window_policies,
)
from .simulate import BatchPolicy, sample_categorical, simulate
from .solvers import (
    AlphaVectorSolution,
    BeliefThresholdPolicy,
    BeliefThresholds,
    GridSolution,
    solve_alpha_vectors,
    solve_belief_grid,
    upper_envelope,
)
from .tmaze import TMaze, window_success_bound  # noqa: F401 (chapter 03)
from .wrappers import FrameStack, FullHistory, frame_stack, push_frame  # noqa: F401 (chapter 03)
from .tiger import (
    HEAR_LEFT,
    HEAR_RIGHT,
    LISTEN,
    OPEN_LEFT,
    OPEN_RIGHT,
    RESET,
    TIGER_LEFT,
    TIGER_RIGHT,
    TabularPOMDP,
    TigerEnv,
    TigerPOMDP,
)

__all__ = [
    "TabularPOMDP", "TigerPOMDP", "TigerEnv",
    "TIGER_LEFT", "TIGER_RIGHT", "LISTEN", "OPEN_LEFT", "OPEN_RIGHT", "HEAR_LEFT", "HEAR_RIGHT", "RESET",
    "belief_update", "belief_update_batch", "observation_probabilities",
    "BatchPolicy", "simulate", "sample_categorical",
    "upper_envelope", "solve_alpha_vectors", "solve_belief_grid",
    "AlphaVectorSolution", "GridSolution", "BeliefThresholds", "BeliefThresholdPolicy",
    "WindowSpace", "WindowPolicy", "WindowPolicySolution",
    "evaluate_window_policies", "best_window_policy", "best_memoryless_policy",
]
