"""The in-notebook checks: the reference earns full points, every typical mistake fails with its own
hint, and no student function (broken, unfinished, mutating) can break the checker."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from seqrl.grading import (
    Case,
    CheckResult,
    Exercise,
    UnknownExerciseError,
    WrongAnswer,
    check,
    collect_results,
    compare,
    get_exercise,
    known_exercises,
    register,
)
from seqrl.grading import checks as checks_module
from seqrl.rl import discounted_returns as library_returns

RETURNS = get_exercise("discounted_returns")


def test_reference_gets_full_points(capsys):
    result = check("discounted_returns", library_returns)
    assert isinstance(result, CheckResult)
    assert result.ok and result.passed == result.total == len(RETURNS.cases)
    assert result.points == result.max_points == len(RETURNS.cases)
    out = capsys.readouterr().out
    assert "✗" not in out and "7/7 cases passed" in out


def test_a_loop_implementation_in_float64_passes():
    def loop_returns(rewards, gamma):
        returns, running = [], 0.0
        for reward in reversed(rewards.double().tolist()):
            running = reward + gamma * running
            returns.append(running)
        return torch.tensor(returns[::-1], dtype=torch.float64)

    assert check("discounted_returns", loop_returns).ok


@pytest.mark.parametrize("wrong", RETURNS.wrong_answers, ids=lambda wrong: wrong.name)
def test_each_wrong_answer_fails_with_its_own_hint(wrong: WrongAnswer, capsys):
    with pytest.raises(AssertionError, match=r"discounted_returns: \d/7 cases passed"):
        check("discounted_returns", wrong.fn)
    out = capsys.readouterr().out
    assert f"looks like: {wrong.name}: {wrong.hint}" in out
    for other in RETURNS.wrong_answers:
        if other is not wrong:
            assert other.hint not in out, f"{wrong.name!r} also got the hint of {other.name!r}"

    result = check("discounted_returns", wrong.fn, raise_on_failure=False, verbose=False)
    assert result.passed < result.total and result.diagnosis == [wrong.name]


def test_the_cases_cover_length_one_and_the_extreme_discounts():
    gammas = {case.args[1] for case in RETURNS.cases}
    lengths = {len(case.args[0]) for case in RETURNS.cases}
    has_negative = any((case.args[0] < 0).any() for case in RETURNS.cases)
    assert {0.0, 1.0, 0.9} <= gammas and 1 in lengths and has_negative


def test_an_exception_fails_the_cases_without_a_traceback(capsys):
    def broken(rewards, gamma):
        return rewards[len(rewards)]  # one past the end

    result = check("discounted_returns", broken, raise_on_failure=False)
    out = capsys.readouterr().out
    assert result.passed == 0 and result.points == 0
    assert all(case.raised and "IndexError" in case.message for case in result.cases)
    assert "in broken, line" in result.cases[0].message
    assert "Traceback" not in out and "IndexError" in out
    with pytest.raises(AssertionError, match="0/7 cases passed"):
        check("discounted_returns", broken, verbose=False)


def test_not_implemented_says_not_implemented_yet(capsys):
    def unfinished(rewards, gamma):
        raise NotImplementedError("discounted_returns: replace this line with your code")

    with pytest.raises(AssertionError, match="0/7"):
        check("discounted_returns", unfinished)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Traceback" not in out
    assert out.count("not implemented yet") == 1  # said once, not once per case


def test_a_mutating_student_function_cannot_corrupt_the_cases():
    before = [case.args[0].clone() for case in RETURNS.cases]

    def in_place(rewards, gamma):  # a correct answer that overwrites its input
        for t in range(len(rewards) - 2, -1, -1):
            rewards[t] += gamma * rewards[t + 1]
        return rewards

    def vandal(rewards, gamma):
        rewards.fill_(1e6)
        return rewards

    assert check("discounted_returns", in_place).ok
    check("discounted_returns", vandal, raise_on_failure=False, verbose=False)
    for case, original in zip(RETURNS.cases, before):
        assert torch.equal(case.args[0], original)
    assert check("discounted_returns", library_returns, verbose=False).ok


def test_shape_mismatch_says_expected_and_got_shape():
    def one_short(rewards, gamma):
        return library_returns(rewards, gamma)[:-1]

    result = check("discounted_returns", one_short, raise_on_failure=False, verbose=False)
    assert "expected shape (3,), got shape (2,)" in result.cases[1].message
    batched = check("discounted_returns", lambda r, g: library_returns(r, g)[None], raise_on_failure=False)
    assert "expected shape (1,), got shape (1, 1)" in batched.cases[0].message


def test_a_list_instead_of_a_tensor_is_named():
    result = check("discounted_returns", lambda r, g: library_returns(r, g).tolist(), raise_on_failure=False)
    assert result.passed == 0 and "expected a torch.Tensor, got list" in result.cases[0].message


def test_unknown_exercise_lists_the_known_names():
    with pytest.raises(KeyError) as error:
        check("discounted_return", library_returns)
    assert isinstance(error.value, UnknownExerciseError)
    assert "discounted_returns" in str(error.value) and "'discounted_return'" in str(error.value)
    assert "discounted_returns" in known_exercises()


def test_compare_handles_numbers_arrays_and_containers():
    assert compare(1.0, 1.0 + 1e-9) is None
    assert compare(1.0, 1.1) == "expected 1, got 1.1"
    assert compare(np.ones(3), np.ones(3)) is None
    assert compare(np.ones(3), np.ones(4)) == "expected shape (3,), got shape (4,)"
    assert compare((torch.ones(2), 3.0), (torch.ones(2), 3.0)) is None
    assert compare((torch.ones(2), 3.0), [torch.ones(2), 4.0]) == "item 1: expected 3, got 4"
    assert compare({"loss": 0.5}, {"loss": 0.5}) is None
    assert "got NaN" in compare(torch.zeros(2), torch.tensor([0.0, float("nan")]))
    assert compare(torch.zeros(2), torch.zeros(2, dtype=torch.float64, requires_grad=True)) is None


def test_points_per_case_and_a_custom_exercise():
    square = Exercise(
        "square",
        reference=lambda x: x * x,
        cases=[Case((2.0,), {}, "two"), Case((-3.0,), {}, "minus three")],
        wrong_answers=[WrongAnswer("doubled instead of squared", lambda x: 2 * x, "multiply x by itself")],
        points_per_case=5,
    )
    assert check(square, lambda x: x**2).points == 10
    result = check(square, lambda x: x + x, raise_on_failure=False)
    assert result.points == 5 and result.max_points == 10  # 2 + 2 == 2 * 2: the first case passes
    assert result.hints == ["looks like: doubled instead of squared: multiply x by itself"]


def test_register_makes_an_exercise_checkable_by_name(monkeypatch):
    monkeypatch.setattr(checks_module, "_REGISTRY", {})
    register(Exercise("negate", lambda x: -x, [Case((1.0,), {}, "one")]))
    assert check("negate", lambda x: -x, verbose=False).ok
    with pytest.raises(ValueError, match="already registered"):
        register(Exercise("negate", lambda x: x, [Case((1.0,), {}, "one")]))


def test_collect_results_gathers_every_check_for_the_grader():
    with collect_results() as results:
        check("discounted_returns", library_returns, verbose=False)
        check("discounted_returns", lambda r, g: r, raise_on_failure=False, verbose=False)
    check("discounted_returns", library_returns, verbose=False)  # after the block: not collected
    assert [result.ok for result in results] == [True, False]
    record = results[1].to_dict()
    assert record["name"] == "discounted_returns" and record["total"] == 7 and len(record["messages"]) == 7


def test_importing_seqrl_grading_is_cheap():
    code = (
        "import sys, seqrl; torch_before = 'torch' in sys.modules; import seqrl.grading; "
        "assert 'seqrl.grading.catalog' not in sys.modules, 'catalog imported'; "
        "assert ('torch' in sys.modules) == torch_before, 'seqrl.grading imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compare_reports_nan_answers_without_numpy_warnings():
    import warnings

    import numpy as np

    from seqrl.grading import compare

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = compare(np.array([np.nan, 1.0]), np.array([np.nan, np.nan]))
    assert message is not None and "expected" in message
