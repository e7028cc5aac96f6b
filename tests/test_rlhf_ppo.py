"""PPO for language models: the pitfalls of RLHF implementations (ratio, KL, padding, EOS, batch
arithmetic), the exact per-prefix KL, the adaptive KL coefficient, and learning in several seeds."""
from __future__ import annotations

import copy

import pytest
import torch

from seqrl.models import logprobs, sample_completions
from seqrl.rl import discounted_returns, ppo_policy_loss
from seqrl.rlhf import AdditionOracle, kl_penalised_rewards
from seqrl.rlhf.kl import AdaptiveKLController, prefix_kl
from seqrl.rlhf.ppo import (
    PolicyWithValueHead,
    PPOConfig,
    collect_rollout,
    gae_advantages,
    rloo_advantages,
    train_ppo,
)
from seqrl.text import AdditionTask

TASK = AdditionTask()


def ends_in_zero(prompts: list[str], texts: list[str], finished: torch.Tensor) -> torch.Tensor:
    """A verifiable reward the tiny model can learn in seconds: 1 for a finished number ending in 0."""
    return torch.tensor([float(f and t.isdigit() and len(t) <= 3 and t.endswith("0")) for t, f in zip(texts, finished.tolist())])


def constant_reward(prompts, texts, finished) -> torch.Tensor:
    return torch.ones(len(texts))


def rollout_of(model, tokenizer, reward=ends_in_zero, n=64, seed=0, **overrides):
    config = PPOConfig(rollouts=n, minibatches=2, max_new_tokens=4, kl_coef=0.1, **overrides)
    policy = PolicyWithValueHead(copy.deepcopy(model))
    with torch.no_grad():  # a policy that differs from the reference, so the KL is not trivially 0
        policy.lm.lm_head.weight.mul_(1.2)
    prompts = TASK.prompts(n, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return policy, collect_rollout(policy, model, tokenizer, prompts, reward, config, generator=generator), config


def test_batch_sizes_that_do_not_divide_give_a_clear_error():
    with pytest.raises(ValueError, match=r"rollouts \(100\) must be divisible by minibatches \(3\)"):
        PPOConfig(rollouts=100, minibatches=3)
    with pytest.raises(ValueError, match="divisible by samples_per_prompt"):
        PPOConfig(rollouts=64, minibatches=2, samples_per_prompt=3)
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        PPOConfig(advantages="rloo")
    with pytest.raises(ValueError, match="at least 2 responses"):
        PPOConfig(rollouts=4, minibatches=4)


def test_with_learning_rate_zero_the_ratio_is_one_and_the_kl_is_zero(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    policy = copy.deepcopy(model)
    config = PPOConfig(iterations=2, rollouts=512, minibatches=4, epochs=2, lr=0.0, value_lr=0.0, max_new_tokens=4, kl_coef=0.1)
    history = train_ppo(policy, tokenizer, TASK.prompts, ends_in_zero, config, reference=model)
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), model.parameters())), "lr 0 changes nothing"
    assert max(history.first_ratio_error) < 1e-6, "the first minibatch's ratio is exactly 1"
    assert all(abs(r - 1.0) < 1e-6 for r in history.ratio_mean) and max(history.clip_fraction) == 0.0
    assert max(history.approx_kl) < 1e-12
    assert max(abs(k) for k in history.kl_sampled) < 1e-5, "mean k1 KL over 512 responses of the reference itself"
    assert max(history.kl_exact) < 1e-6
    assert max(history.logprob_gap) < 1e-5, "the sampler records what the scorer computes"


def test_sampled_k1_kl_and_exact_per_prefix_kl_estimate_the_sequence_kl(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    policy = copy.deepcopy(model)
    with torch.no_grad():
        policy.lm_head.weight.mul_(1.3)
    prompts = TASK.prompts(4, seed=3)
    batch = sample_completions(policy, tokenizer, [p for p in prompts for _ in range(1024)], 4, generator=torch.Generator().manual_seed(0))
    start, mask = batch.prompt_tokens.shape[1], batch.mask.float()
    with torch.no_grad():
        ref_lp = logprobs(model, batch.sequences, batch.attention_mask, start)
    k1 = ((batch.logprobs - ref_lp) * mask).sum(dim=1)
    exact = prefix_kl(policy, model, batch.sequences, batch.attention_mask, start, batch.mask)
    truth = AdditionOracle(TASK, model, tokenizer, prompts).report(policy)["kl_to_ref"]
    assert float(exact.kl.min()) >= 0 and float(prefix_kl(model, model, batch.sequences, batch.attention_mask, start, batch.mask).kl.abs().max()) == 0
    for estimate in (k1, exact.kl):
        error = abs(float(estimate.mean()) - truth)
        assert error < 4 * float(estimate.std()) / len(estimate) ** 0.5 + 0.01, f"{float(estimate.mean()):.4f} vs exact {truth:.4f}"
    assert float(exact.kl.std()) < float(k1.std()), "the per-prefix KL has less variance than k1"


def test_kl_rewards_values_advantages_and_policy_loss_are_exactly_zero_on_padding(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    policy, rollout, config = rollout_of(model, tokenizer)
    pads = rollout.mask == 0
    assert pads.any() and (~pads).any()
    for name in ("logprobs", "ref_logprobs", "values", "kl", "rewards", "advantages", "returns"):
        assert torch.all(getattr(rollout, name)[pads] == 0), f"{name} is not exactly 0 on padding"
    new_lp = rollout.logprobs.clone().requires_grad_(True)
    loss, _ = ppo_policy_loss(new_lp, rollout.logprobs, rollout.advantages, config.clip, rollout.mask)
    loss.backward()
    assert torch.all(new_lp.grad[pads] == 0), "the policy loss sends no gradient to padded positions"
    garbage = torch.where(pads, torch.full_like(rollout.logprobs, -7.0), rollout.logprobs)
    assert float(ppo_policy_loss(garbage, rollout.logprobs, rollout.advantages, config.clip, rollout.mask)[0]) == float(loss.detach())


def test_pad_and_eos_are_distinct_and_the_score_sits_on_the_eos(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    assert tokenizer.pad_id != tokenizer.eos_id
    _, rollout, config = rollout_of(model, tokenizer, reward=constant_reward)
    batch = rollout.completions
    last = rollout.mask.sum(dim=1).long() - 1
    rows = torch.arange(len(rollout))
    finished = batch.finished
    assert torch.all(batch.tokens[rows[finished], last[finished]] == tokenizer.eos_id), "the last real token is the EOS"
    assert torch.all(batch.tokens[rollout.mask == 0] == tokenizer.pad_id), "after the EOS come pads, never another EOS"
    expected = -rollout.kl_coef * rollout.kl[rows, last] + rollout.scores
    assert torch.allclose(rollout.rewards[rows, last], expected), "the score is added at the last real token"
    before_last = torch.arange(rollout.mask.shape[1])[None, :] < last[:, None]
    assert torch.allclose(rollout.rewards[before_last], -rollout.kl_coef * rollout.kl[before_last]), "elsewhere only the KL"


def test_responses_without_eos_get_the_missing_eos_penalty(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    config = PPOConfig(rollouts=64, minibatches=2, max_new_tokens=2, missing_eos_penalty=1.5)
    policy = PolicyWithValueHead(copy.deepcopy(model))
    rollout = collect_rollout(policy, model, tokenizer, TASK.prompts(64, seed=1), constant_reward, config,
                              generator=torch.Generator().manual_seed(0))
    unfinished = ~rollout.completions.finished
    assert unfinished.any() and (~unfinished).any(), "two tokens: some answers finish, three-digit ones cannot"
    assert torch.all(rollout.scores[unfinished] == -0.5) and torch.all(rollout.scores[~unfinished] == 1.0)
    assert torch.all(rollout.raw_scores == 1.0), "the reward function's own scores are kept for logging"


def test_rewards_and_advantages_are_invariant_to_trailing_padding(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    policy, rollout, config = rollout_of(model, tokenizer)
    batch, extra = rollout.completions, 3
    pad = lambda x, value: torch.cat([x, torch.full((x.shape[0], extra), value, dtype=x.dtype)], dim=1)  # noqa: E731
    sequences, attention = pad(batch.sequences, tokenizer.pad_id), pad(batch.attention_mask, 0)
    mask = pad(rollout.mask, 0.0)
    start = rollout.response_start
    with torch.no_grad():
        old_lp, values = policy(sequences, attention, start, config.temperature)
        ref_lp = logprobs(model, sequences, attention, start, config.temperature)
    old_lp, ref_lp, values = old_lp * mask, ref_lp * mask, values * mask
    n = rollout.mask.shape[1]
    assert torch.allclose(old_lp[:, :n], rollout.logprobs, atol=1e-6) and torch.allclose(ref_lp[:, :n], rollout.ref_logprobs, atol=1e-6)
    rewards, kl = kl_penalised_rewards(old_lp, ref_lp, rollout.scores, mask, rollout.kl_coef)
    advantages, returns = gae_advantages(rewards, values, mask, config.gamma, config.lam)
    for padded, original in ((rewards, rollout.rewards), (kl, rollout.kl), (advantages, rollout.advantages), (returns, rollout.returns)):
        assert torch.allclose(padded[:, :n], original, atol=1e-5) and torch.all(padded[:, n:] == 0)


def test_a_zero_initialised_value_head_makes_the_advantages_the_discounted_rewards(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    _, rollout, config = rollout_of(model, tokenizer)
    assert torch.all(rollout.values == 0), "V = 0 before the first update"
    advantages, returns = gae_advantages(rollout.rewards, rollout.values, rollout.mask, config.gamma, config.lam, whiten_advantages=False)
    expected = discounted_returns(rollout.rewards, config.gamma * config.lam) * rollout.mask
    assert torch.allclose(advantages, expected, atol=1e-6) and torch.allclose(returns, advantages)
    whitened = rollout.advantages[rollout.mask.bool()]
    assert abs(float(whitened.mean())) < 1e-5 and abs(float(whitened.std(unbiased=False)) - 1) < 1e-3


def test_leave_one_out_advantages_are_shared_by_the_tokens_of_a_response():
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0])
    kl = torch.zeros(4, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]]).float()
    advantages = rloo_advantages(scores, kl, mask, kl_coef=0.1, samples_per_prompt=2, normalise=False)
    expected = torch.tensor([1.0, -1.0, 0.0, 0.0])[:, None] * mask
    assert torch.equal(advantages, expected)


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    controller = AdaptiveKLController(value=0.2, target=6.0, horizon=10_000)
    assert controller.update(12.0, 500) == pytest.approx(0.2 * (1 + 0.2 * 0.05)), "error clipped at +20%"
    assert controller.update(6.0, 500) == pytest.approx(0.2 * 1.01), "on target: unchanged"
    assert controller.update(5.4, 500) == pytest.approx(0.2 * 1.01 * (1 - 0.1 * 0.05))
    with pytest.raises(ValueError):
        AdaptiveKLController(value=0.2, target=0.0, horizon=10_000)


def test_adaptive_kl_coefficient_follows_the_kl_to_the_reference(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    config = PPOConfig(iterations=6, rollouts=64, minibatches=2, epochs=2, lr=1e-3, max_new_tokens=4, kl_coef=0.1,
                       kl_target=0.05, kl_horizon=640, exact_kl=False)
    history = train_ppo(copy.deepcopy(model), tokenizer, TASK.prompts, ends_in_zero, config, reference=model)
    for before, after, kl in zip(history.kl_coef, history.kl_coef[1:], history.kl_sampled):
        assert (after > before) == (kl > config.kl_target), "beta rises when the KL is above target, falls below"


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_ppo_trains_the_policy_and_its_critic(tiny_addition, one_torch_thread, critic):
    model, tokenizer = tiny_addition
    lm = copy.deepcopy(model)
    policy = PolicyWithValueHead(lm) if critic == "shared" else PolicyWithValueHead.with_separate_critic(lm)
    config = PPOConfig(iterations=3, rollouts=64, minibatches=2, epochs=2, lr=1e-3, max_new_tokens=4, exact_kl=False)
    history = train_ppo(policy, tokenizer, TASK.prompts, ends_in_zero, config, reference=model)
    assert any(not torch.equal(a, b) for a, b in zip(lm.parameters(), model.parameters()))
    assert float(policy.value_head.linear.weight.detach().abs().sum()) > 0, "the value head leaves zero"
    if critic == "separate":
        assert any(not torch.equal(a, b) for a, b in zip(policy.critic.parameters(), model.parameters())), "the critic trains"
    assert len(history.proxy) == 3 and all(v == v for v in history.value_loss)


def held_out_reward(model, tokenizer, n: int = 1024) -> float:
    prompts = TASK.prompts(n, seed=99)
    out = sample_completions(model, tokenizer, prompts, 4, generator=torch.Generator().manual_seed(0))
    return float(ends_in_zero(prompts, out.texts, out.finished).mean())


def test_ppo_with_a_kl_penalty_raises_the_gold_reward_in_three_of_three_seeds(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    before = held_out_reward(model, tokenizer)
    for seed in range(3):
        policy = copy.deepcopy(model)
        config = PPOConfig(iterations=15, rollouts=64, minibatches=2, epochs=2, lr=1e-3, max_new_tokens=4, kl_coef=0.05,
                           seed=seed, exact_kl=False)
        history = train_ppo(policy, tokenizer, TASK.prompts, ends_in_zero, config, reference=model)
        after = held_out_reward(policy, tokenizer)
        assert after > before + 0.3, f"seed {seed}: held-out reward {before:.3f} -> {after:.3f}"
        assert 0 < history.kl_sampled[-1] < 10, "it moved, but not without bound"


def test_critic_free_rloo_variant_raises_the_reward(tiny_addition, one_torch_thread):
    model, tokenizer = tiny_addition
    before = held_out_reward(model, tokenizer)
    policy = copy.deepcopy(model)
    config = PPOConfig(iterations=15, rollouts=64, minibatches=2, epochs=2, lr=1e-3, max_new_tokens=4, kl_coef=0.05,
                       advantages="rloo", samples_per_prompt=4, exact_kl=False)
    history = train_ppo(policy, tokenizer, TASK.prompts, ends_in_zero, config, reference=model)
    assert held_out_reward(policy, tokenizer) > before + 0.3
    assert all(v != v for v in history.explained_variance), "no critic, no explained variance"


def test_target_kl_stops_the_update_before_the_step_that_would_move_the_policy_too_far(tiny_addition, one_torch_thread):
    from seqrl.rlhf.ppo import ppo_optimizer, ppo_update

    model, tokenizer = tiny_addition
    policy, rollout, config = rollout_of(model, tokenizer, epochs=4, lr=1e-2)

    def update(target_kl):
        run = copy.deepcopy(policy)
        run_config = PPOConfig(**{**config.__dict__, "target_kl": target_kl})
        optimizer, _ = ppo_optimizer(run, run_config)
        return run, ppo_update(run, optimizer, rollout, run_config, torch.Generator().manual_seed(0))

    free, free_stats = update(None)
    assert free_stats["minibatch_steps"] == 4 * 2  # every epoch, every minibatch
    # the first minibatch is scored by the policy that sampled it (KL 0): its step is taken; after it
    # every minibatch is further than 1.5 * 1e-9 away, so the update stops there
    stopped, stopped_stats = update(1e-9)
    assert stopped_stats["minibatch_steps"] == 1
    moved = [not torch.equal(a, b) for a, b in zip(stopped.parameters(), policy.parameters())]
    assert any(moved), "the first step was taken"
    assert any(not torch.equal(a, b) for a, b in zip(stopped.parameters(), free.parameters()))
    # a moderate target: some steps, each taken at an approximate KL below 1.5 * target_kl
    target = free_stats["approx_kl"] / 2
    _, some_stats = update(target)
    assert 1 <= some_stats["minibatch_steps"] < 8
    assert some_stats["approx_kl"] <= 1.5 * target
    with pytest.raises(ValueError, match="target_kl must be > 0"):
        PPOConfig(target_kl=0.0)


def test_without_a_penalty_and_without_tracking_the_reference_is_never_scored(tiny_addition, one_torch_thread):
    """beta = 0 and track_kl=False: the reference's forward pass is skipped (as TRL does at beta = 0);
    the advantages are those of the tracked run and the KL is NaN, not a 0 nobody measured."""
    model, tokenizer = tiny_addition
    calls = []
    reference = copy.deepcopy(model)
    reference.register_forward_hook(lambda *args: calls.append(1))
    rollouts = {}
    for track in (True, False):
        calls.clear()
        config = PPOConfig(rollouts=32, minibatches=2, max_new_tokens=4, kl_coef=0.0, advantages="rloo", samples_per_prompt=4,
                           track_kl=track)
        policy = PolicyWithValueHead(copy.deepcopy(model))
        with torch.no_grad():
            policy.lm.lm_head.weight.mul_(1.2)  # unlike the reference: a tracked KL is not 0
        rollouts[track] = collect_rollout(policy, reference, tokenizer, TASK.prompts(32, seed=0), ends_in_zero, config,
                                          generator=torch.Generator().manual_seed(0))
        assert bool(calls) == track
    tracked, skipped = rollouts[True], rollouts[False]
    assert (tracked.kl.sum(dim=1) != 0).any() and torch.isnan(skipped.kl).all() and torch.isnan(skipped.ref_logprobs).all()
    torch.testing.assert_close(skipped.advantages, tracked.advantages)
    torch.testing.assert_close(skipped.logprobs, tracked.logprobs)
    # with a penalty the reference is scored whatever track_kl says
    calls.clear()
    config = PPOConfig(rollouts=32, minibatches=2, max_new_tokens=4, kl_coef=0.1, track_kl=False)
    collect_rollout(PolicyWithValueHead(copy.deepcopy(model)), reference, tokenizer, TASK.prompts(32, seed=0), ends_in_zero, config,
                    generator=torch.Generator().manual_seed(0))
    assert calls


def test_minibatches_hold_whole_groups_of_a_prompts_responses(tiny_addition, one_torch_thread):
    """k responses per prompt: every minibatch holds all k responses of its prompts (so their
    leave-one-out advantages sum to zero in it), and over the epochs the groups are reshuffled."""
    from seqrl.rlhf.ppo import ppo_optimizer, ppo_update

    model, tokenizer = tiny_addition
    k = 4
    config = PPOConfig(rollouts=64, minibatches=4, epochs=3, max_new_tokens=4, kl_coef=0.0, advantages="rloo", samples_per_prompt=k,
                       track_kl=False)
    policy = PolicyWithValueHead(copy.deepcopy(model))
    prompts = [p for p in TASK.prompts(64 // k, seed=1) for _ in range(k)]
    rollout = collect_rollout(policy, model, tokenizer, prompts, ends_in_zero, config, generator=torch.Generator().manual_seed(0))
    seen, score = [], policy.score
    start = rollout.response_start

    def recording_score(sequences, *args):
        # which rollout rows this minibatch is: match its rows to the rollout's rows
        full = rollout.sequences[:, : sequences.shape[1]]
        seen.append([int((full == row).all(dim=1).nonzero()[0]) // k for row in sequences])
        return score(sequences, *args)

    policy.score = recording_score
    optimizer, _ = ppo_optimizer(policy, config)
    ppo_update(policy, optimizer, rollout, config, torch.Generator().manual_seed(0))
    assert len(seen) == 3 * 4
    for groups in seen:
        counts = {g: groups.count(g) for g in groups}
        assert set(counts.values()) == {k} and len(counts) == 64 // k // 4, counts  # 4 whole groups of 4
    assert {tuple(sorted(set(g))) for g in seen[:4]} != {tuple(sorted(set(g))) for g in seen[4:8]}  # reshuffled
    # the advantages of each minibatch sum to zero over its groups (leave-one-out, before whitening: per group)
    per_response = rollout.advantages.sum(dim=1) / rollout.mask.sum(dim=1)
    for groups in seen:
        rows = [g * k + j for g in sorted(set(groups)) for j in range(k)]
        assert abs(float(per_response[rows].sum())) < 1e-4


def test_minibatch_order_shuffles_rows_when_groups_do_not_fit():
    from seqrl.rlhf.ppo import _minibatch_order

    # one response per prompt: exactly the row shuffle PPO always used (same generator draws)
    torch.testing.assert_close(_minibatch_order(16, 4, 1, torch.Generator().manual_seed(3)), torch.randperm(16, generator=torch.Generator().manual_seed(3)))
    # groups of 4 in minibatches of 6 cannot stay whole: rows are shuffled one by one
    order = _minibatch_order(12, 6, 4, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(12))
    torch.testing.assert_close(order, torch.randperm(12, generator=torch.Generator().manual_seed(0)))
    # groups that fit: a permutation of whole, contiguous groups
    order = _minibatch_order(12, 6, 3, torch.Generator().manual_seed(0)).view(4, 3)
    assert sorted(order.flatten().tolist()) == list(range(12))
    assert all(row.tolist() == list(range(int(row[0]), int(row[0]) + 3)) and int(row[0]) % 3 == 0 for row in order)
