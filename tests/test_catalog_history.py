"""Exercise ex04 (a frame stack reset at episode boundaries): the reference earns full points, a
student's loop version passes, and every typical mistake fails with its own hint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqrl.grading import WrongAnswer, check, get_exercise
from seqrl.pomdp.wrappers import frame_stack

EXERCISE = get_exercise("frame_stack")
N_CASES = len(EXERCISE.cases)


def loop_frame_stack(observations, dones, k):
    """A student's version: walk each row forwards, keep the current episode's observations in a list."""
    N, T, d = observations.shape
    out = torch.zeros(N, T, k * d)
    for n in range(N):
        episode = []
        for t in range(T):
            episode.append(observations[n, t])
            recent = episode[-k:]
            for slot, obs in enumerate(recent):
                position = k - len(recent) + slot  # right-aligned: the current observation in the last slot
                out[n, t, position * d:(position + 1) * d] = obs
            if dones[n, t]:
                episode = []
    return out


def numpy_frame_stack(observations, dones, k):
    """The same in numpy, returning a tensor at the end."""
    obs, done = observations.numpy(), dones.numpy()
    N, T, d = obs.shape
    out = np.zeros((N, T, k * d), dtype=np.float32)
    for n in range(N):
        start = 0
        for t in range(T):
            for j in range(k):
                s = t - (k - 1 - j)
                if s >= start:
                    out[n, t, j * d:(j + 1) * d] = obs[n, s]
            if done[n, t]:
                start = t + 1
    return torch.from_numpy(out)


def test_reference_from_the_library_gets_full_points(capsys):
    result = check("frame_stack", frame_stack)
    assert result.ok and result.points == result.max_points == N_CASES
    assert f"{N_CASES}/{N_CASES} cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("student", [loop_frame_stack, numpy_frame_stack], ids=["loop", "numpy"])
def test_loop_implementations_pass(student):
    assert check("frame_stack", student, verbose=False).ok


@pytest.mark.parametrize("wrong", EXERCISE.wrong_answers, ids=lambda wrong: wrong.name)
def test_each_wrong_answer_fails_with_its_own_hint(wrong: WrongAnswer, capsys):
    with pytest.raises(AssertionError, match=rf"frame_stack: \d/{N_CASES} cases passed"):
        check("frame_stack", wrong.fn)
    out = capsys.readouterr().out
    assert f"looks like: {wrong.name}: {wrong.hint}" in out
    for other in EXERCISE.wrong_answers:
        if other is not wrong:
            assert other.hint not in out, f"{wrong.name!r} also got the hint of {other.name!r}"
    result = check("frame_stack", wrong.fn, raise_on_failure=False, verbose=False)
    assert result.passed < result.total and result.diagnosis == [wrong.name]


def test_the_required_mistakes_are_covered():
    names = " | ".join(wrong.name for wrong in EXERCISE.wrong_answers)
    for mistake in ("no reset", "excludes the current", "future", "newest observation first", "first observation"):
        assert mistake in names


def test_the_cases_include_a_boundary_inside_a_row_and_k_longer_than_an_episode():
    assert any(case.args[1][:, :-1].any() for case in EXERCISE.cases)
    assert any(case.args[2] == 1 for case in EXERCISE.cases)
    assert any(case.args[2] > int(case.args[0].shape[1]) for case in EXERCISE.cases)
