"""Recurrent Q-learning from replayed episodes: the buffer, n-step targets, burn-in and stored
state, and a DRQN that solves a short T-maze."""
from __future__ import annotations

import pytest
import torch

from seqrl.pomdp.tmaze import TMaze
from seqrl.rl.drqn import (
    DRQNConfig,
    EpisodeReplay,
    QNetwork,
    evaluate_greedy,
    n_step_targets,
    state_discrepancy,
    train_drqn,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _episodes(lengths: list[int], obs_dim: int = 2, hidden: int = 3, terminated: bool = True):
    """Rows whose observations/states encode (episode, step) so slices can be checked by value."""
    n, T = len(lengths), max(lengths)
    steps = torch.arange(T, dtype=torch.float32)
    obs = torch.zeros(n, T, obs_dim)
    obs[..., 0] = torch.arange(n, dtype=torch.float32)[:, None]
    obs[..., 1] = steps[None]
    states = obs[..., 1:2].expand(n, T, hidden).clone() + 100  # "state before step t" = 100 + t
    mask = (steps[None] < torch.tensor(lengths)[:, None]).float()
    ends = (steps[None] == torch.tensor(lengths)[:, None] - 1) & bool(terminated)
    rewards = torch.ones(n, T)
    return obs, states, torch.zeros(n, T, dtype=torch.long), rewards, mask, ends


def test_the_buffer_stores_whole_episodes_and_overwrites_the_oldest():
    replay = EpisodeReplay(capacity=3, max_len=6, obs_dim=2, hidden=3)
    replay.add(*_episodes([2, 5]))
    replay.add(*_episodes([6, 1]))
    assert len(replay) == 3 and replay.lengths.tolist() == [1, 5, 6]  # the first episode was overwritten
    batch = replay.sample_episodes(16, torch.Generator().manual_seed(0))
    assert torch.equal(batch.mask.sum(dim=1), replay.lengths[batch.rows].float())
    assert torch.all(batch.initial == 0) and torch.all(batch.rewards[batch.mask == 0] == 0)
    assert torch.equal(batch.dones.sum(dim=1), torch.ones(16))  # one termination per episode, at its end


def test_windows_have_burn_in_stored_state_and_extra_target_steps():
    replay = EpisodeReplay(capacity=4, max_len=10, obs_dim=2, hidden=3)
    replay.add(*_episodes([10, 10]))
    batch = replay.sample_windows(64, length=3, burn_in=2, stored_state=True, generator=torch.Generator().manual_seed(1), extra=2)
    steps = batch.obs[..., 1]  # the episode step of every replayed step
    first = batch.first.float()
    assert torch.equal(steps[:, 0], first) and batch.obs.shape[1] == 2 + 3 + 2
    assert torch.equal(batch.initial[:, 0], 100 + first)  # the actor's state before the first replayed step
    trained = batch.train_mask.bool()
    # trained steps: 3 (fewer at the end), right after a burn-in of min(2, s) steps
    assert torch.all(trained.sum(dim=1) <= 3) and torch.all(trained.sum(dim=1) >= 1)
    for row in range(64):
        start = int(steps[row][trained[row]][0])
        assert int(first[row]) == max(0, start - 2)
    zero = replay.sample_windows(8, 3, 2, stored_state=False, generator=torch.Generator().manual_seed(1))
    assert torch.all(zero.initial == 0)


def test_n_step_targets_match_a_hand_computation():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    next_values = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    mask = torch.ones(1, 4)
    dones = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    g = 0.5
    targets, valid = n_step_targets(rewards, dones, mask, next_values, g, n=2)
    # y_0 = 1 + .5*2 + .25*V_2 ; y_1 = 2 + .5*3 + .25*V_3 ; y_2 = 3 + .5*4 (terminal) ; y_3 = 4 (terminal)
    assert torch.allclose(targets, torch.tensor([[1 + 1 + 7.5, 2 + 1.5 + 10, 3 + 2.0, 4.0]]))
    assert torch.equal(valid, torch.ones(1, 4))
    # Without the termination, the last two steps have no step t + 2 to bootstrap from: no target.
    _, valid = n_step_targets(rewards, torch.zeros(1, 4), mask, next_values, g, n=2)
    assert valid.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    one, _ = n_step_targets(rewards, dones, mask, next_values, g, n=1)
    assert torch.allclose(one, torch.tensor([[1 + 10.0, 2 + 15.0, 3 + 20.0, 4.0]]))


def test_stored_states_from_the_current_network_are_exactly_right_and_zero_states_are_not():
    """No training between acting and replay = no representational drift: the stored state is the
    true one. A zero state is wrong for every window that does not start an episode."""
    torch.manual_seed(0)
    q_net = QNetwork(4, 3)
    log = train_drqn(q_net, TMaze(3, n_envs=32), DRQNConfig(iterations=1, updates=0), seed=0)
    stored = state_discrepancy(q_net, log.replay, length=4, burn_in=0, stored_state=True)
    zero = state_discrepancy(q_net, log.replay, length=4, burn_in=0, stored_state=False)
    assert torch.all(stored < 1e-5) and torch.all(zero[:2] > 1e-3)


def test_drqn_on_whole_episodes_solves_a_short_tmaze():
    torch.manual_seed(0)
    q_net = QNetwork(4, 3)
    config = DRQNConfig(iterations=25, eval_every=25)
    log = train_drqn(q_net, TMaze(2, n_envs=32), config, eval_env=TMaze(2, n_envs=256), seed=0)
    assert log.success[-1] >= 0.95 and evaluate_greedy(TMaze(2, n_envs=256), q_net, seed=1) >= 0.95


def test_the_replay_validates_its_inputs():
    with pytest.raises(ValueError, match="capacity"):
        EpisodeReplay(0, 5, 2, 3)
    replay = EpisodeReplay(2, 3, 2, 3)
    with pytest.raises(ValueError, match="empty"):
        replay.sample_episodes(1)
    with pytest.raises(ValueError, match="do not fit"):
        replay.add(*_episodes([4]))
