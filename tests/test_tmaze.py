"""The T-maze, the history wrappers and the hidden-velocity CartPole: rules checked by hand."""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from seqrl.pomdp.cartpole import HideVelocities, MaskedCartPole
from seqrl.pomdp.tmaze import FORWARD, LEFT, RIGHT, TMaze, window_success_bound
from seqrl.pomdp.wrappers import FrameStack, FullHistory, frame_stack, push_frame


def _walk(env: TMaze, actions_per_step: list[torch.Tensor]):
    """Step through a list of action vectors; return the per-step outputs."""
    return [env.step(actions) for actions in actions_per_step]


def test_the_shortest_episode_sees_cue_then_corridor_then_junction_and_pays_one_minus_step_costs():
    L = 4
    env = TMaze(L, n_envs=2)
    obs, info = env.reset(seed=3)
    cue = info["cue"]
    assert torch.equal(obs[:, :2].argmax(dim=1), cue) and torch.all(obs[:, :2].sum(dim=1) == 1)
    total = torch.zeros(2)
    for t in range(1, L + 1):
        obs, reward, terminated, truncated, _ = env.step(torch.full((2,), FORWARD))
        total += reward
        expected_column = 3 if t == L else 2  # the junction after L forward moves, corridor before it
        assert torch.all(obs.argmax(dim=1) == expected_column) and not terminated.any() and not truncated.any()
    obs, reward, terminated, truncated, info = env.step(cue + 1)  # LEFT for cue 0, RIGHT for cue 1
    total += reward
    assert terminated.all() and info["success"].all()
    assert torch.allclose(total, torch.full((2,), 1.0 - 0.01 * (L + 1)))


def test_the_wrong_turn_ends_the_episode_with_the_wrong_reward():
    env = TMaze(1, n_envs=1, correct_reward=4.0, wrong_reward=-0.1, step_cost=0.0)
    _, info = env.reset(seed=0)
    env.step(torch.tensor([FORWARD]))
    wrong = torch.tensor([RIGHT if int(info["cue"]) == 0 else LEFT])
    _, reward, terminated, _, info = env.step(wrong)
    assert terminated.item() and not info["success"].item() and reward.item() == pytest.approx(-0.1)


def test_turning_in_the_corridor_and_forward_at_the_junction_bump_into_walls():
    env = TMaze(2, n_envs=1)
    env.reset(seed=0)
    obs, _, terminated, _, _ = env.step(torch.tensor([LEFT]))  # a wall at the cue cell
    assert env.position.item() == 0 and obs[0, :2].sum() == 1 and not terminated.item()
    _walk(env, [torch.tensor([FORWARD])] * 2)
    assert env.position.item() == 2
    obs, _, terminated, _, _ = env.step(torch.tensor([FORWARD]))  # the junction's wall
    assert env.position.item() == 2 and obs[0, 3] == 1 and not terminated.item()


def test_episodes_are_cut_at_max_steps_and_then_stay_finished_with_zero_reward():
    env = TMaze(3, n_envs=2, max_steps=5)
    env.reset(seed=0)
    outputs = _walk(env, [torch.tensor([LEFT, FORWARD])] * 5)
    truncated = torch.stack([out[3] for out in outputs])  # (5, 2)
    assert truncated[:4].sum() == 0 and truncated[4].all()
    _, reward, terminated, truncated, _ = env.step(torch.tensor([FORWARD, FORWARD]))
    assert torch.all(reward == 0) and not terminated.any() and not truncated.any()


def test_cues_are_seeded_and_balanced():
    env = TMaze(2, n_envs=4000)
    first = env.reset(seed=7)[1]["cue"]
    again = env.reset(seed=7)[1]["cue"]
    other = env.reset(seed=8)[1]["cue"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert abs(first.float().mean().item() - 0.5) < 0.03  # 4 standard errors


@pytest.mark.parametrize("length", [1, 3, 8])
def test_a_window_holds_the_cue_at_the_junction_only_if_it_is_longer_than_the_corridor(length):
    """The bound of window_success_bound: both cues give the same window iff k <= L."""
    windows = {}
    for cue in (0, 1):
        obs = torch.zeros(1, length + 1, 4)
        obs[0, 0, cue] = 1.0
        obs[0, 1:length, 2] = 1.0
        obs[0, length, 3] = 1.0  # the straight path: cue, L - 1 corridor cells, junction
        windows[cue] = {k: frame_stack(obs, None, k)[0, -1] for k in range(1, length + 3)}
    for k in range(1, length + 3):
        same = torch.equal(windows[0][k], windows[1][k])
        assert same == (k <= length)
        assert window_success_bound(k, length) == (0.5 if same else 1.0)
    assert window_success_bound(None, length) == 1.0


def test_frame_stack_matches_a_hand_computed_example_with_an_episode_boundary():
    obs = torch.arange(1.0, 7.0).reshape(1, 6, 1)  # o_t = t + 1
    dones = torch.tensor([[False, False, True, False, False, False]])  # episodes t = 0..2 and 3..5
    stacked = frame_stack(obs, dones, 3)[0]
    expected = torch.tensor([[0, 0, 1], [0, 1, 2], [1, 2, 3], [0, 0, 4], [0, 4, 5], [4, 5, 6]], dtype=torch.float32)
    assert torch.equal(stacked, expected)


def test_push_frame_online_equals_frame_stack_offline_with_resets():
    torch.manual_seed(0)
    N, T, d, k = 3, 9, 2, 3
    obs = torch.randn(N, T, d)
    dones = torch.rand(N, T) < 0.25
    window = torch.zeros(N, k, d)
    online = []
    for t in range(T):
        window = push_frame(window, obs[:, t])
        online.append(window.flatten(1))
        window = window * ~dones[:, t, None, None]  # the episode ended: forget it
    assert torch.allclose(torch.stack(online, dim=1), frame_stack(obs, dones, k))


def test_frame_stack_rejects_bad_shapes_and_k():
    with pytest.raises(ValueError, match="k must be"):
        frame_stack(torch.zeros(1, 2, 3), None, 0)
    with pytest.raises(ValueError, match="observations must have shape"):
        frame_stack(torch.zeros(2, 3), None, 1)
    with pytest.raises(ValueError, match="dones must have shape"):
        frame_stack(torch.zeros(1, 2, 3), torch.zeros(2, 2, dtype=torch.bool), 1)


def test_the_env_wrappers_return_the_window_and_the_whole_history():
    stacked, full, plain = FrameStack(TMaze(3, n_envs=2), 2), FullHistory(TMaze(3, n_envs=2)), TMaze(3, n_envs=2)
    seen = [plain.reset(seed=1)[0]]
    windows, histories = [stacked.reset(seed=1)[0]], [full.reset(seed=1)[0]]
    for _ in range(3):
        actions = torch.tensor([FORWARD, LEFT])
        seen.append(plain.step(actions)[0])
        windows.append(stacked.step(actions)[0])
        histories.append(full.step(actions)[0])
    seen = torch.stack(seen, dim=1)  # (2, 4, 4)
    assert torch.equal(torch.stack(windows, dim=1), frame_stack(seen, None, 2))
    assert torch.equal(histories[-1], seen) and stacked.obs_dim == 8


def test_tmaze_validates_its_arguments():
    with pytest.raises(ValueError, match="length"):
        TMaze(0)
    with pytest.raises(ValueError, match="max_steps"):
        TMaze(5, max_steps=5)
    env = TMaze(2, n_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions must have shape"):
        env.step(torch.tensor([0]))
    with pytest.raises(ValueError, match="actions must be in"):
        env.step(torch.tensor([0, 3]))


def test_hide_velocities_keeps_position_and_angle_of_cartpole_v1():
    env = HideVelocities(gymnasium.make("CartPole-v1"))
    obs, _ = env.reset(seed=0)
    full, _ = gymnasium.make("CartPole-v1").reset(seed=0)
    assert obs.shape == (2,) and env.observation_space.shape == (2,)
    assert np.allclose(obs, full[[0, 2]])


def test_masked_cartpole_hides_velocities_scales_and_freezes_finished_episodes():
    env = MaskedCartPole(n_envs=8, max_steps=30)
    obs, _ = env.reset(seed=0)
    state = env._env.state.T  # (8, 4) the hidden state behind the observation
    assert obs.shape == (8, 2) and torch.allclose(obs, torch.as_tensor(state[:, [0, 2]] / [2.4, env._env.theta_threshold_radians], dtype=torch.float32))
    lengths = torch.zeros(8)
    for _ in range(40):  # always push right: the pole falls within 30 steps
        _, reward, terminated, truncated, info = env.step(torch.ones(8, dtype=torch.long))
        lengths += reward
    assert torch.all(lengths < 30) and torch.all(lengths > 3)  # each counted once, until it fell
    assert not info["success"].any()
