"""History policies: acting step by step equals reading whole episodes, memories reset at episode
ends, and the on-policy trainer solves the T-maze exactly when the policy can remember the cue."""
from __future__ import annotations

import math

import pytest
import torch

from seqrl.models import GPT, GPTConfig
from seqrl.models.gpt import StaticKVCache
from seqrl.pomdp.tmaze import TMaze
from seqrl.pomdp.wrappers import episode_ids
from seqrl.rl.pg import PGConfig, collect_episodes, evaluate, reinforce_update, train
from seqrl.rl.policies import GPTTrunk, make_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


KINDS = [("memoryless", {}), ("stack", {"k": 3}), ("gru", {}), ("gpt", {"block_size": 16})]


def _policy(kind: str, sizes: dict, obs_dim: int = 5):
    torch.manual_seed(0)
    policy = make_policy(kind, obs_dim, 3, **sizes)
    for p in policy.parameters():  # make the heads non-trivial (they start at ~0)
        p.data.add_(0.1 * torch.randn_like(p))
    return policy.eval()


@pytest.mark.parametrize("kind,sizes", KINDS, ids=[k for k, _ in KINDS])
def test_acting_step_by_step_equals_reading_the_whole_episode(kind, sizes):
    policy = _policy(kind, sizes)
    obs = torch.randn(4, 7, 5)
    with torch.no_grad():
        logits, values = policy(obs)
        state, step_logits, step_values = policy.initial_state(4), [], []
        for t in range(7):
            lg, v, state = policy.step(obs[:, t], state)
            step_logits.append(lg)
            step_values.append(v)
    assert torch.allclose(torch.stack(step_logits, dim=1), logits, atol=1e-5)
    assert torch.allclose(torch.stack(step_values, dim=1), values, atol=1e-5)


@pytest.mark.parametrize("kind,sizes", KINDS, ids=[k for k, _ in KINDS])
def test_resetting_the_memory_at_episode_ends_never_leaks_one_episode_into_the_next(kind, sizes):
    """A stream of episodes with staggered ends, acted step by step with reset_state, gives the same
    outputs as reading every episode on its own from its first step."""
    policy = _policy(kind, sizes)
    torch.manual_seed(1)
    N, T = 3, 12
    obs = torch.randn(N, T, 5)
    dones = torch.zeros(N, T, dtype=torch.bool)
    dones[0, [2, 7]] = True
    dones[1, [0, 1, 5]] = True
    dones[2, 10] = True
    with torch.no_grad():
        state, online = policy.initial_state(N), []
        for t in range(T):
            logits, _, state = policy.step(obs[:, t], state)
            online.append(logits)
            state = policy.reset_state(state, dones[:, t])
        online = torch.stack(online, dim=1)
        episodes = episode_ids(dones)
        for row in range(N):
            for episode in episodes[row].unique():
                steps = (episodes[row] == episode).nonzero().squeeze(1)
                alone, _ = policy(obs[row : row + 1, steps])
                assert torch.allclose(online[row, steps], alone[0], atol=1e-5), (kind, row, int(episode))


def test_the_gpt_cache_reclaims_the_slots_of_ended_episodes():
    policy = _policy("gpt", {"block_size": 6})
    state = policy.initial_state(2)
    with torch.no_grad():
        for t in range(20):  # 20 steps in a block of 6: possible because ended episodes free their slots
            _, _, state = policy.step(torch.randn(2, 5), state)
            state = policy.reset_state(state, torch.tensor([t % 3 == 2, t % 5 == 4]))
            assert state.length <= 6 and state.longest_episode() <= 5
        with pytest.raises(ValueError, match="longer than block_size"):
            for _ in range(7):
                _, _, state = policy.step(torch.randn(2, 5), state)


def test_a_static_kv_cache_gives_the_gpts_growing_cache_outputs():
    """The preallocated cache written in place and the list cache grown by concatenation are the same
    keys and values: the same logits, with and without a padding mask."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 11, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0  # left padding
    for attention_mask in (None, mask):
        cut = lambda t: None if attention_mask is None else attention_mask[:, :t]  # noqa: E731
        with torch.no_grad():
            growing = gpt(idx[:, :3], attention_mask=cut(3))
            static = gpt(idx[:, :3], past=StaticKVCache.for_model(gpt, 3), attention_mask=cut(3))
            past, cache = growing.past, static.past
            for t in range(3, 12):
                growing = gpt(idx[:, t : t + 1], past=past, attention_mask=cut(t + 1))
                static = gpt(idx[:, t : t + 1], past=cache, attention_mask=cut(t + 1))
                past = growing.past
                torch.testing.assert_close(static.logits, growing.logits, atol=1e-6, rtol=0)
        assert static.past is cache and cache.length == 12 and torch.equal(cache[1][0], past[1][0])
    with pytest.raises(ValueError, match="capacity"):
        gpt(idx, past=StaticKVCache.for_model(gpt, 3, capacity=8))


def _grown_cache_rollout(trunk: GPTTrunk, obs: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
    """The reference memory: the GPT's list cache grown by torch.cat every step, ended episodes
    masked out, never compacted (so it needs a block as long as the whole stream)."""
    past, mask, features = None, torch.zeros(obs.shape[0], 0, dtype=torch.long), []
    for t in range(obs.shape[1]):
        mask = torch.cat([mask, torch.ones(obs.shape[0], 1, dtype=torch.long)], dim=1)
        out = trunk.gpt(None, past=past, attention_mask=mask, inputs_embeds=trunk.embed(obs[:, t])[:, None])
        past = out.past
        features.append(out.hidden[:, 0])
        mask = mask * ~dones[:, t, None]
    return torch.stack(features, dim=1)


def test_the_preallocated_gpt_cache_equals_the_growing_cache_across_episode_resets():
    """GPTTrunk.step (a block_size-slot cache written in place, reclaimed only when full) against the
    list cache grown by concatenation: the same features to 1e-6 over a 30-step stream of episodes
    with staggered ends, in a block of 8 that has to be compacted several times."""
    torch.manual_seed(0)
    small = GPTTrunk(5, n_embd=16, n_head=2, block_size=8).eval()
    large = GPTTrunk(5, n_embd=16, n_head=2, block_size=32).eval()  # the same weights, room for the whole stream
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.1 * torch.randn_like(p))
        weights = small.state_dict()
        weights["gpt.pos_emb.weight"] = torch.cat([weights["gpt.pos_emb.weight"], large.gpt.pos_emb.weight[8:]])
        large.load_state_dict(weights)
    N, T = 3, 30
    obs = torch.randn(N, T, 5)
    dones = torch.zeros(N, T, dtype=torch.bool)
    dones[0, [2, 9, 16, 23]] = True  # episodes of at most 7 steps: they fit the block of 8
    dones[1, [0, 1, 5, 12, 19, 26]] = True
    dones[2, [6, 13, 14, 15, 22, 29]] = True
    with torch.no_grad():
        state, online = small.initial_state(N), []
        for t in range(T):
            features, state = small.step(obs[:, t], state)
            online.append(features)
            state = small.reset_state(state, dones[:, t])
        reference = _grown_cache_rollout(large, obs, dones)
    torch.testing.assert_close(torch.stack(online, dim=1), reference, atol=1e-6, rtol=0)


def _initial_attention(trunk: GPTTrunk, obs: torch.Tensor) -> torch.Tensor:
    """The first layer's attention probabilities ``(n_head, T, T)`` for one episode ``obs (T, d)``."""
    block, T, C = trunk.gpt.blocks[0], obs.shape[0], trunk.out_dim
    x = block.ln_1(trunk.embed(obs) + trunk.gpt.pos_emb.weight[:T])
    q, k, _ = block.attn.qkv(x).split(C, dim=1)
    heads = block.attn.n_head
    q, k = (z.view(T, heads, C // heads).transpose(0, 1) for z in (q, k))  # (nh, T, hs)
    scores = q @ k.transpose(1, 2) / math.sqrt(C // heads)
    return scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(dim=-1)


def test_the_gpts_attention_starts_with_a_prior_toward_recent_steps():
    """recency > 0: from step 60 the fast-frequency head weights the last 5 steps above the average past
    step, and above the episode's first steps; recency = 0 (GPT-2's init) weights every past step alike."""
    torch.manual_seed(0)
    obs = 0.1 * torch.randn(80, 2)
    with torch.no_grad():
        prior = _initial_attention(GPTTrunk(2, block_size=80), obs)[0, 60, :61]  # head 0, query t = 60
        flat = _initial_attention(GPTTrunk(2, block_size=80, recency=0.0), obs)[0, 60, :61]
    assert prior[-5:].mean() > 1.5 / 61 and prior[-5:].mean() > 1.5 * prior[:5].mean()
    assert torch.allclose(flat, torch.full_like(flat, 1 / 61), rtol=0.05)


def test_make_policy_and_trunks_validate_their_inputs():
    with pytest.raises(ValueError, match="kind must be one of"):
        make_policy("lstm", 4, 3)
    with pytest.raises(ValueError, match="recency"):
        GPTTrunk(4, recency=-1.0)
    trunk = GPTTrunk(4, n_embd=8, n_head=2, block_size=4)
    with pytest.raises(ValueError, match="observations must have shape"):
        trunk(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="done must have shape"):
        make_policy("gru", 4, 3).reset_state(torch.zeros(2, 32), torch.zeros(3))


def test_collected_episodes_are_rows_padded_after_their_end():
    env = TMaze(3, n_envs=16)
    batch = collect_episodes(env, make_policy("memoryless", 4, 3), seed=0)
    lengths = batch.lengths.long()
    T = batch.mask.shape[1]
    assert torch.equal(batch.mask, (torch.arange(T)[None] < lengths[:, None]).float())  # a prefix of each row
    assert torch.all(batch.rewards[batch.mask == 0] == 0) and torch.all(lengths >= 4)  # at least L + 1 steps
    assert batch.obs[:, 0, :2].sum() == 16  # every episode starts at the cue


def test_ppo_solves_the_tmaze_with_a_gru_and_not_without_memory():
    """L = 4: the cue is 4 observations old at the junction. Memoryless is capped at 1/2."""
    torch.manual_seed(0)
    results = {}
    for kind in ("memoryless", "gru"):
        policy = make_policy(kind, 4, 3)
        train(policy, TMaze(4, n_envs=128), PGConfig(iterations=40, stop_at_success=0.97), seed=0)
        results[kind] = evaluate(TMaze(4, n_envs=512), policy, greedy=False)["success"]
    assert results["gru"] >= 0.95 and 0.4 <= results["memoryless"] <= 0.6, results


def test_reinforce_with_a_baseline_solves_a_short_tmaze_with_a_long_enough_window():
    policy = make_policy("stack", 4, 3, k=3)  # k = 3 > L = 2: the window holds the cue
    log = train(policy, TMaze(2, n_envs=128), PGConfig(iterations=60, stop_at_success=0.97), update=reinforce_update, seed=0)
    assert evaluate(TMaze(2, n_envs=512), policy, greedy=False)["success"] >= 0.95, log.success[-5:]


def test_training_is_deterministic_given_the_seed():
    logs = []
    for _ in range(2):
        torch.manual_seed(123)  # a different global state must not matter: train seeds itself
        policy = make_policy("stack", 4, 3, k=2)
        torch.manual_seed(0)
        logs.append(train(policy, TMaze(3, n_envs=32), PGConfig(iterations=4), seed=5).returns)
    assert logs[0] == logs[1]
