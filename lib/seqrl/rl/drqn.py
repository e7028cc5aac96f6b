r"""Recurrent Q-learning from a replay of whole episodes (DRQN, Hausknecht & Stone 2015; R2D2's
stored state and burn-in, Kapturowski et al. 2019).

A Q-network with memory, :math:`Q_\theta(h_t, a)` computed by a GRU over the history, learns from a
replay buffer. Replaying single transitions :math:`(o_t, a_t, r_t, o_{t+1})` no longer works: the
network needs the history before :math:`o_t` to know where it is. So the buffer stores **whole
episodes** (:class:`EpisodeReplay`), and the learner replays sequences:

* **whole episodes from a zero state** (DRQN's "bootstrapped sequential updates"): exact, the
  memory is recomputed from the first observation with the current weights; the cost is replaying
  long episodes in full.
* **windows of** ``length`` **steps** (DRQN's "random updates", R2D2's sequences). The recurrent
  state at the window's first step must come from somewhere: a **zero state** (wrong: the history
  before the window is forgotten), or the **stored state** the actor had when it played that step
  (right history, but computed by older weights: *representational drift*). R2D2 adds a **burn-in**:
  run the network without gradients over ``burn_in`` steps before the window, so the state the
  loss sees has been refreshed by the current weights.

The loss is the one-step double Q-learning loss (van Hasselt et al. 2016, as in R2D2) with a target
network :math:`\bar\theta`, over the trained steps of the replayed sequence:

.. math:: y_t = r_t + \gamma\,(1 - d_t)\,Q_{\bar\theta}\big(h_{t+1}, \arg\max_{a'} Q_\theta(h_{t+1}, a')\big), \qquad
          \mathcal L(\theta) = \overline{\mathrm{Huber}\big(Q_\theta(h_t, a_t) - y_t\big)}.

An episode cut by the step limit did not terminate: its last step has no successor in the buffer
and no target, so it enters no loss (treating it as terminal would teach the network that a
corridor cell is worth nothing).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.optim import adam, gradient_step
from .advantages import masked_mean
from .policies import GRUTrunk

__all__ = ["QNetwork", "EpisodeReplay", "SequenceBatch", "DRQNConfig", "DRQNLog", "q_learning_loss", "train_drqn",
           "evaluate_greedy", "state_discrepancy"]


class QNetwork(nn.Module):
    r"""Q-values :math:`Q(h_t, \cdot) = W z_t + b` on a :class:`~seqrl.rl.policies.GRUTrunk` :math:`z_t`."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 32) -> None:
        super().__init__()
        self.trunk = GRUTrunk(obs_dim, hidden)
        self.head = nn.Linear(hidden, n_actions)
        self.n_actions, self.hidden = n_actions, hidden

    def forward(self, obs: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """``obs (N, T, d)`` from state ``initial (N, H)`` (zeros by default) -> ``Q (N, T, A)``."""
        return self.head(self.trunk(obs, initial))

    def states(self, obs: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """The recurrent state after each step, ``(N, T, H)`` (the GRU's output is its state)."""
        return self.trunk(obs, initial)

    def initial_state(self, n: int) -> torch.Tensor:
        return self.trunk.initial_state(n)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs (N, d)`` -> ``Q (N, A)`` and the new state."""
        features, state = self.trunk.step(obs, state)
        return self.head(features), state

    def reset_state(self, state: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        return self.trunk.reset_state(state, done)


@dataclass
class SequenceBatch:
    """Replayed sequences, ``B`` rows of ``T`` steps (right-padded).

    ``obs (B, T, d)``, ``actions``, ``rewards``, ``dones`` (true where an episode terminated),
    ``mask (B, T)`` (1 for steps that exist), ``train_mask (B, T)`` (1 for steps that enter the loss:
    not the burn-in, not the extra step a window keeps for its last target), ``initial (B, H)``
    (the state before the first step), and where each sequence comes from: buffer ``rows (B,)`` and
    ``first (B,)``, the episode step of its first replayed step.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    mask: torch.Tensor
    train_mask: torch.Tensor
    initial: torch.Tensor
    rows: torch.Tensor
    first: torch.Tensor


class EpisodeReplay:
    """A FIFO replay buffer of whole episodes, with the actor's recurrent state at every step.

    Args:
        capacity: episodes kept (the oldest are overwritten).
        max_len: longest episode (the env's ``max_steps``).
        obs_dim, hidden: observation size and recurrent-state size.
    """

    def __init__(self, capacity: int, max_len: int, obs_dim: int, hidden: int, device: torch.device | str | None = None) -> None:
        if capacity < 1 or max_len < 1:
            raise ValueError(f"capacity and max_len must be positive, got {capacity} and {max_len}")
        self.capacity, self.max_len = capacity, max_len
        device = torch.device("cpu") if device is None else torch.device(device)
        self.obs = torch.zeros(capacity, max_len, obs_dim, device=device)
        self.states = torch.zeros(capacity, max_len, hidden, device=device)  # state *before* step t
        self.actions = torch.zeros(capacity, max_len, dtype=torch.long, device=device)
        self.rewards = torch.zeros(capacity, max_len, device=device)
        self.dones = torch.zeros(capacity, max_len, device=device)
        self.lengths = torch.zeros(capacity, dtype=torch.long, device=device)
        self.size, self._next = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, states, actions, rewards, mask, terminated) -> None:
        """Store ``N`` episodes: ``obs (N, T, d)``, ``states (N, T, H)``, ``actions``, ``rewards``,
        ``mask (N, T)`` (1 for real steps; each row is one episode from its first step) and
        ``terminated (N, T)`` (true at a last step that ended the episode; an episode cut by the step
        limit has none, and its last step, without a successor, gets no target)."""
        n, T = mask.shape
        if T > self.max_len:
            raise ValueError(f"episodes of {T} steps do not fit max_len={self.max_len}")
        lengths = mask.sum(dim=1).long()
        if bool((lengths < 1).any()):
            raise ValueError("every stored episode needs at least one step")
        rows = (torch.arange(n) + self._next) % self.capacity
        rows = rows.to(self.lengths.device)
        for name, value in (("obs", obs), ("states", states), ("actions", actions), ("rewards", rewards * mask)):
            store = getattr(self, name)
            store[rows] = 0
            store[rows, :T] = value.to(store.dtype)
        self.dones[rows] = 0
        self.dones[rows, :T] = (terminated.bool() & mask.bool()).float().to(self.dones.device)
        self.lengths[rows] = lengths
        self._next = (self._next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample_episodes(self, batch_size: int, generator: torch.Generator | None = None) -> SequenceBatch:
        """``batch_size`` whole episodes (uniformly, with replacement), each from a zero state."""
        rows = self._rows(batch_size, generator)
        T = int(self.lengths[rows].max())
        mask = (torch.arange(T, device=rows.device)[None] < self.lengths[rows, None]).float()
        initial = torch.zeros(batch_size, self.states.shape[2], device=self.states.device)
        return SequenceBatch(self.obs[rows, :T], self.actions[rows, :T], self.rewards[rows, :T], self.dones[rows, :T],
                             mask, mask.clone(), initial, rows, torch.zeros_like(rows))

    def sample_windows(self, batch_size: int, length: int, burn_in: int = 0, stored_state: bool = False,
                       generator: torch.Generator | None = None, extra: int = 1) -> SequenceBatch:
        r"""Windows of ``length`` trained steps, preceded by up to ``burn_in`` steps (not trained).

        A window starts at a uniformly drawn step :math:`s` of a drawn episode; the trained steps
        are :math:`s, \dots, s + \text{length} - 1` (fewer at the episode's end) plus ``extra``
        steps kept only for the targets (``n_step`` of them for n-step targets); the sequence replayed starts :math:`b = \min(\text{burn\_in}, s)`
        steps earlier. ``initial`` is the actor's stored state before that first replayed step
        (``stored_state=True``) or zeros (a wrong memory unless the sequence starts the episode).
        """
        if length < 1 or burn_in < 0:
            raise ValueError(f"length must be >= 1 and burn_in >= 0, got {length} and {burn_in}")
        rows = self._rows(batch_size, generator)
        lengths = self.lengths[rows]
        u = torch.rand(batch_size, generator=generator).to(lengths.device)
        starts = (u * lengths).long().clamp(max=lengths - 1)  # s
        first = (starts - burn_in).clamp(min=0)  # first replayed step
        span = burn_in + length + extra
        steps = first[:, None] + torch.arange(span, device=rows.device)[None]  # (B, span)
        exists = steps < lengths[:, None]
        trained = exists & (steps >= starts[:, None]) & (steps < (starts + length)[:, None])
        index = steps.clamp(max=self.max_len - 1)
        gather = lambda store: store[rows[:, None], index]  # noqa: E731
        initial = self.states[rows, first] if stored_state else torch.zeros(batch_size, self.states.shape[2], device=self.states.device)
        return SequenceBatch(gather(self.obs), gather(self.actions), gather(self.rewards) * exists, gather(self.dones) * exists,
                             exists.float(), trained.float(), initial, rows, first)

    def _rows(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        if self.size == 0:
            raise ValueError("the replay buffer is empty")
        return torch.randint(0, self.size, (batch_size,), generator=generator).to(self.lengths.device)


def _ahead(x: torch.Tensor, i: int) -> torch.Tensor:
    """``x[:, t + i]`` at every ``t`` (zeros past the end), for ``x (B, T, ...)``."""
    if i == 0:
        return x
    return torch.cat([x[:, i:], torch.zeros_like(x[:, : min(i, x.shape[1])])], dim=1)[:, : x.shape[1]]


def n_step_targets(rewards: torch.Tensor, dones: torch.Tensor, mask: torch.Tensor, next_values: torch.Tensor,
                   gamma: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""n-step Q-learning targets along sequences (R2D2 uses :math:`n = 5`):

    .. math:: y_t = \sum_{i=0}^{n-1} \gamma^i r_{t+i} + \gamma^n\, \hat V_{t+n},

    cut at a termination (no bootstrap after it). ``next_values (B, T)`` holds :math:`\hat V_s` at
    every step :math:`s`. Returns ``targets (B, T)`` and ``valid (B, T)``: a target is valid if the
    episode terminates within the :math:`n` steps or step :math:`t+n` is in the sequence.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    targets = torch.zeros_like(rewards)
    running = torch.ones_like(rewards)  # 1 while no termination happened in t .. t+i-1
    for i in range(n):
        targets = targets + gamma**i * running * _ahead(rewards * mask, i)
        running = running * (1.0 - _ahead(dones, i))
    bootstrap = running * _ahead(mask, n)
    targets = targets + gamma**n * bootstrap * _ahead(next_values, n)
    valid = (running == 0) | (_ahead(mask, n) > 0)
    return targets, valid.float()


def q_learning_loss(q_net: QNetwork, target_net: QNetwork, batch: SequenceBatch, gamma: float, n_step: int = 1) -> torch.Tensor:
    r"""The (n-step, double) Q-learning loss over the trained steps of replayed sequences.

    Both networks read the whole replayed sequence from ``batch.initial``; burn-in steps carry no
    loss. A trained step needs the step ``n_step`` later in the sequence (windows keep ``n_step``
    extra steps) or a termination before it; otherwise it has no target and no loss.
    """
    q = q_net(batch.obs, batch.initial)  # (B, T, A)
    q_taken = q.gather(-1, batch.actions[..., None]).squeeze(-1)  # (B, T)
    with torch.no_grad():
        # Double Q-learning (van Hasselt et al. 2016, as in R2D2): the online network picks a', the target scores it.
        best = q.argmax(dim=-1, keepdim=True)  # (B, T, 1)
        values = target_net(batch.obs, batch.initial).gather(-1, best).squeeze(-1)  # (B, T)
        targets, valid = n_step_targets(batch.rewards, batch.dones, batch.mask, values, gamma, n_step)
    return masked_mean(F.smooth_l1_loss(q_taken, targets, reduction="none"), batch.train_mask * valid)


@dataclass
class DRQNConfig:
    """Hyper-parameters of :func:`train_drqn`. ``window=None`` replays whole episodes."""

    iterations: int = 40  # each: one batch of env.n_envs episodes, then `updates` gradient steps
    updates: int = 8
    batch_size: int = 32
    lr: float = 5e-3
    gamma: float = 0.9
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_fraction: float = 0.5  # share of the iterations over which epsilon decays linearly
    target_every: int = 25  # gradient steps between target-network copies
    capacity: int = 2000  # episodes in the replay buffer
    window: int | None = None  # replay windows of this many steps instead of whole episodes
    burn_in: int = 0
    stored_state: bool = False
    n_step: int = 5  # steps of real rewards before bootstrapping (R2D2: 5)
    max_grad_norm: float = 10.0
    eval_every: int = 4


@dataclass
class DRQNLog:
    """Greedy success rate at the evaluated iterations, and the buffer after training."""

    iterations: list[int] = field(default_factory=list)
    success: list[float] = field(default_factory=list)
    seconds: float = 0.0
    replay: EpisodeReplay | None = None


@torch.inference_mode()
def _play(env: Any, q_net: QNetwork, seed: int, epsilon: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``env.n_envs`` episodes, epsilon-greedy, with the actor's state before every step."""
    obs, _ = env.reset(seed=seed)
    n = env.n_envs
    state = q_net.initial_state(n)
    active = torch.ones(n, dtype=torch.bool, device=obs.device)
    success = torch.zeros(n, dtype=torch.bool, device=obs.device)
    saved: dict[str, list[torch.Tensor]] = {key: [] for key in ("obs", "states", "actions", "rewards", "mask", "terminated")}
    for _ in range(env.max_steps):
        saved["states"].append(state)
        q, state = q_net.step(obs, state)
        explore = torch.rand(n, generator=generator).to(obs.device) < epsilon
        random_actions = torch.randint(0, q_net.n_actions, (n,), generator=generator).to(obs.device)
        actions = torch.where(explore, random_actions, q.argmax(dim=-1))
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        for key, value in (("obs", obs), ("actions", actions), ("rewards", rewards * active), ("mask", active.float()),
                           ("terminated", terminated & active)):
            saved[key].append(value)
        success |= info.get("success", torch.zeros_like(success)) & active
        active = active & ~(terminated | truncated)
        obs = next_obs
        if not bool(active.any()):
            break
    out = {key: torch.stack(values, dim=1) for key, values in saved.items()}
    out["success"] = success
    return out


def evaluate_greedy(env: Any, q_net: QNetwork, seed: int = 10_000) -> float:
    """Success rate of the greedy policy :math:`a_t = \\arg\\max_a Q(h_t, a)` over ``env.n_envs`` episodes."""
    played = _play(env, q_net, seed, 0.0, torch.Generator().manual_seed(seed))
    return float(played["success"].float().mean())


def train_drqn(q_net: QNetwork, env: Any, config: DRQNConfig | None = None, eval_env: Any = None, seed: int = 0) -> DRQNLog:
    """Train ``q_net`` by recurrent Q-learning from an :class:`EpisodeReplay` (deterministic given ``seed``)."""
    config = config or DRQNConfig()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    target_net = copy.deepcopy(q_net)
    optimizer = adam(q_net.parameters(), config.lr)
    device = next(q_net.parameters()).device
    replay = EpisodeReplay(config.capacity, env.max_steps, env.obs_dim, q_net.hidden, device)
    log, steps, start = DRQNLog(replay=replay), 0, time.perf_counter()
    decay_iterations = max(1, int(config.epsilon_fraction * config.iterations))
    for iteration in range(config.iterations):
        fraction = min(1.0, iteration / decay_iterations)
        epsilon = config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)
        played = _play(env, q_net, seed * 100_003 + iteration, epsilon, generator)
        replay.add(played["obs"], played["states"], played["actions"], played["rewards"], played["mask"], played["terminated"])
        for _ in range(config.updates):
            if config.window is None:
                batch = replay.sample_episodes(config.batch_size, generator)
            else:
                batch = replay.sample_windows(config.batch_size, config.window, config.burn_in, config.stored_state,
                                              generator, extra=config.n_step)
            loss = q_learning_loss(q_net, target_net, batch, config.gamma, config.n_step)
            gradient_step(optimizer, loss, q_net.parameters(), config.max_grad_norm)
            steps += 1
            if steps % config.target_every == 0:
                target_net.load_state_dict(q_net.state_dict())
        if eval_env is not None and ((iteration + 1) % config.eval_every == 0 or iteration == config.iterations - 1):
            log.iterations.append(iteration + 1)
            log.success.append(evaluate_greedy(eval_env, q_net))
    log.seconds = time.perf_counter() - start
    return log


@torch.no_grad()
def state_discrepancy(q_net: QNetwork, replay: EpisodeReplay, length: int, burn_in: int, stored_state: bool,
                      batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    r"""R2D2's Q-value discrepancy along replayed windows (Kapturowski et al. 2019):

    .. math:: \Delta Q_j = \frac{\overline{\| Q_\theta(\hat h_{s+j}) - Q_\theta(h_{s+j}) \|_2}}{\max |Q_\theta(h)|},

    where :math:`h` is the true state (the current network run from the episode's first step) and
    :math:`\hat h` the state the learner would use: zero or stored, after ``burn_in`` steps. Returns
    ``(length,)``: :math:`\Delta Q_j` for window steps :math:`j = 0 .. \text{length}-1` (NaN where no
    sampled window reaches step :math:`j`).
    """
    generator = torch.Generator().manual_seed(seed)
    batch = replay.sample_windows(batch_size, length, burn_in, stored_state, generator)
    rows, first = batch.rows, batch.first
    q_hat = q_net(batch.obs, batch.initial)  # (B, span, A)
    q_true_all = q_net(replay.obs[rows])  # (B, max_len, A), from each episode's start
    span = batch.obs.shape[1]
    index = (first[:, None] + torch.arange(span, device=first.device)[None]).clamp(max=replay.max_len - 1)
    q_true = q_true_all[torch.arange(batch_size, device=first.device)[:, None], index]  # (B, span, A)
    error = (q_hat - q_true).norm(dim=-1)  # (B, span)
    real = torch.arange(replay.max_len, device=rows.device)[None] < replay.lengths[rows, None]  # (B, max_len)
    scale = q_true_all.abs().amax(dim=-1)[real].max()  # max |Q| over real steps only
    trained = batch.train_mask.bool()
    out = torch.full((length,), float("nan"))
    position = trained.long().cumsum(dim=1) - 1  # j, the step's place in the trained window
    for j in range(length):
        at_j = trained & (position == j)
        if bool(at_j.any()):
            out[j] = float(error[at_j].mean() / scale)
    return out

