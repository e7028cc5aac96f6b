"""Exercise ex06 (KL-penalised rewards, GAE, the clipped PPO loss): the references earn full points, other
correct implementations pass, every typical mistake fails with its own hint, and the numbers agree
with hand computation (score on the last real token, V = 0 after it, ratio 1 on the first step)."""
from __future__ import annotations

import pytest
import torch

from seqrl.grading import WrongAnswer, check, get_exercise
from seqrl.grading.catalog.rlhf import loss_and_gradient, rewards_and_gradient_flag
from seqrl.rl import gae, ppo_policy_loss
from seqrl.rlhf.objectives import kl_penalised_rewards

KL = get_exercise("kl_penalised_rewards")
GAE = get_exercise("gae_advantages")
PPO = get_exercise("ppo_clipped_loss")
ALL = [KL, GAE, PPO]


def _assert_own_hint(exercise, wrong: WrongAnswer, capsys) -> None:
    n_cases = len(exercise.cases)
    with pytest.raises(AssertionError, match=rf"{exercise.name}: \d/{n_cases} cases passed"):
        check(exercise.name, wrong.fn)
    out = capsys.readouterr().out
    assert f"looks like: {wrong.name}: {wrong.hint}" in out
    for other in exercise.wrong_answers:
        if other is not wrong:
            assert other.hint not in out, f"{wrong.name!r} also got the hint of {other.name!r}"
    result = check(exercise.name, wrong.fn, raise_on_failure=False, verbose=False)
    assert result.passed < result.total and result.diagnosis == [wrong.name]


@pytest.mark.parametrize(
    "exercise, wrong",
    [(exercise, wrong) for exercise in ALL for wrong in exercise.wrong_answers],
    ids=lambda value: value.name,
)
def test_each_mistake_fails_with_its_own_hint(exercise, wrong: WrongAnswer, capsys):
    _assert_own_hint(exercise, wrong, capsys)


@pytest.mark.parametrize(
    "exercise, mistakes",
    [
        (KL, ("slot after EOS", "last column", "wrong sign", "not masked", "every token", "stop-gradient")),
        (GAE, ("V_t instead of V_{t+1}", "shifted by one step", "mask ignored", "bootstraps from the pad",
               "not zeroed", "gamma and lam swapped", "returns instead of advantages")),
        (PPO, ("min instead of max", "advantage clipped", "ratio inverted", "not masked", "sign flipped")),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_the_required_mistakes_are_covered(exercise, mistakes):
    names = " | ".join(wrong.name for wrong in exercise.wrong_answers)
    for mistake in mistakes:
        assert mistake in names


@pytest.mark.parametrize("name", ["kl_penalised_rewards", "gae_advantages", "ppo_clipped_loss"])
def test_not_implemented_says_not_implemented_yet(name, capsys):
    def unfinished(*args):
        raise NotImplementedError(f"{name}: replace this line with your code")

    wrap = {"kl_penalised_rewards": rewards_and_gradient_flag, "ppo_clipped_loss": loss_and_gradient}.get(name, lambda f: f)
    with pytest.raises(AssertionError, match="0/"):
        check(name, wrap(unfinished))
    assert "not implemented yet" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# KL-penalised rewards


def _loop_rewards(logprobs, ref_logprobs, scores, mask, kl_coef):
    """A student's version: row by row, under no_grad, in float32."""
    with torch.no_grad():
        rewards = torch.zeros(mask.shape, dtype=torch.float32)
        kl = torch.zeros(mask.shape, dtype=torch.float32)
        for i in range(mask.shape[0]):
            length = int(mask[i].sum())
            for t in range(length):
                kl[i, t] = float(logprobs[i, t] - ref_logprobs[i, t])
                rewards[i, t] = -kl_coef * kl[i, t]
            rewards[i, length - 1] += float(scores[i])
    return rewards, kl


def test_kl_reference_from_the_library_gets_full_points(capsys):
    result = check("kl_penalised_rewards", rewards_and_gradient_flag(kl_penalised_rewards))
    assert result.ok and result.points == result.max_points == len(KL.cases)
    assert f"{len(KL.cases)}/{len(KL.cases)} cases passed" in capsys.readouterr().out


def test_a_loop_implementation_of_the_rewards_passes():
    assert check("kl_penalised_rewards", rewards_and_gradient_flag(_loop_rewards), verbose=False).ok


def test_the_score_sits_on_the_last_real_token_and_pads_get_nothing():
    case = KL.cases[0]
    logprobs, ref_logprobs, scores, mask, kl_coef = case.args
    out = KL.reference(*case.args)
    last = mask.sum(dim=1).long() - 1
    rows = torch.arange(len(scores))
    assert torch.allclose(out["rewards"][rows, last], -kl_coef * (logprobs - ref_logprobs)[rows, last] + scores)
    assert torch.count_nonzero(out["rewards"] * (1 - mask)) == 0 and torch.count_nonzero(out["kl"] * (1 - mask)) == 0
    assert torch.allclose(out["rewards"].sum(dim=1), scores - kl_coef * out["kl"].sum(dim=1))
    assert out["rewards require grad"] is False


def test_a_missing_stop_gradient_is_caught_by_the_flag_alone():
    wrong = next(w for w in KL.wrong_answers if "stop-gradient" in w.name)
    for case in KL.cases:
        got, expected = wrong.fn(*case.args), KL.reference(*case.args)
        assert torch.allclose(got["rewards"], expected["rewards"]) and torch.allclose(got["kl"], expected["kl"])
        assert got["rewards require grad"] is True


def test_the_wrapper_names_a_wrong_return_type():
    result = check("kl_penalised_rewards", rewards_and_gradient_flag(lambda lp, ref, s, m, b: lp - ref),
                   raise_on_failure=False, verbose=False)
    assert result.passed == 0 and all(case.raised and "(rewards, kl)" in case.message for case in result.cases)


# ---------------------------------------------------------------------------------------------
# GAE


def _gae_by_sums(rewards, values, mask, gamma, lam):
    """A student's version from the closed form A_t = sum_l (gamma lam)^l delta_{t+l}, row by row."""
    advantages = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        length = int(mask[i].sum())
        v = torch.cat([values[i, :length], torch.zeros(1, dtype=values.dtype)])
        deltas = rewards[i, :length] + gamma * v[1:] - v[:-1]
        for t in range(length):
            weights = (gamma * lam) ** torch.arange(length - t, dtype=rewards.dtype)
            advantages[i, t] = (weights * deltas[t:]).sum()
    return advantages


def test_gae_reference_from_the_library_gets_full_points(capsys):
    result = check("gae_advantages", lambda r, v, m, g, l: gae(r, v, g, l, mask=m)[0])
    assert result.ok and result.points == result.max_points == len(GAE.cases)
    assert f"{len(GAE.cases)}/{len(GAE.cases)} cases passed" in capsys.readouterr().out


def test_the_closed_form_sum_passes():
    assert check("gae_advantages", _gae_by_sums, verbose=False).ok


def test_with_a_zero_value_head_the_advantages_are_discounted_reward_sums():
    case = next(case for case in GAE.cases if "V = 0" in case.description)
    rewards, values, mask, gamma, lam = case.args
    advantages = GAE.reference(*case.args)
    i = 2  # the longest row (4 real tokens): term by term
    length = int(mask[i].sum())
    for t in range(length):
        expected = sum((gamma * lam) ** (k - t) * float(rewards[i, k]) for k in range(t, length))
        assert abs(float(advantages[i, t]) - expected) < 1e-12
    assert torch.count_nonzero(advantages * (1 - mask)) == 0


def test_the_last_real_token_does_not_bootstrap_from_the_padding():
    case = next(case for case in GAE.cases if "RLHF setting" in case.description)
    rewards, values, mask, gamma, lam = case.args
    advantages = GAE.reference(*case.args)
    last = mask.sum(dim=1).long() - 1
    rows = torch.arange(len(last))
    assert torch.allclose(advantages[rows, last], rewards[rows, last] - values[rows, last])  # V_{T+1} = 0
    assert torch.count_nonzero(values * (1 - mask)) > 0  # ... although the head wrote values on the pads


# ---------------------------------------------------------------------------------------------
# The clipped PPO loss


def _where_implementation(logprobs, logprobs_old, advantages, clip, mask):
    """A student's version: the objective with min, negated, and an explicit masked mean."""
    ratio = (logprobs - logprobs_old).exp()
    objective = torch.min(ratio * advantages, torch.clamp(ratio, 1 - clip, 1 + clip) * advantages)
    return -(objective * mask).sum() / mask.sum()


def test_ppo_reference_from_the_library_gets_full_points(capsys):
    result = check("ppo_clipped_loss", loss_and_gradient(lambda lp, old, a, c, m: ppo_policy_loss(lp, old, a, c, m)[0]))
    assert result.ok and result.points == result.max_points == len(PPO.cases)
    assert f"{len(PPO.cases)}/{len(PPO.cases)} cases passed" in capsys.readouterr().out


def test_the_objective_written_with_min_and_negated_passes():
    assert check("ppo_clipped_loss", loss_and_gradient(_where_implementation), verbose=False).ok


def test_at_ratio_one_the_loss_is_minus_the_mean_advantage_and_its_gradient_the_policy_gradient():
    case = next(case for case in PPO.cases if "ratio = 1" in case.description)
    logprobs, logprobs_old, advantages, clip, mask = case.args
    assert torch.equal(logprobs, logprobs_old)
    out = PPO.reference(*case.args)
    assert torch.isclose(out["loss"], -(advantages * mask).sum() / mask.sum())
    assert torch.allclose(out["d loss / d logprobs"], -advantages * mask / mask.sum())


def test_the_cases_clip_in_both_directions():
    clipped_up = clipped_down = 0
    for case in PPO.cases:
        logprobs, logprobs_old, advantages, clip, mask = case.args
        ratio = (logprobs - logprobs_old).exp()
        clipped_up += int(((ratio > 1 + clip) & (advantages > 0) & (mask > 0)).sum())
        clipped_down += int(((ratio < 1 - clip) & (advantages < 0) & (mask > 0)).sum())
    assert clipped_up > 0 and clipped_down > 0
