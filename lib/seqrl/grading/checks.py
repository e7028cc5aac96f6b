"""In-notebook checks: run a student's function on fixed cases, compare it with the reference, and
name the mistake when the wrong output matches a known wrong answer.

An exercise is data: a reference implementation, a list of input cases, and a list of typical wrong
answers written as code. ``check(name, fn)`` runs ``fn`` on every case, prints a short report
(``✓``/``✗`` per case, a hint when a wrong answer is recognised, a score line) and raises
``AssertionError`` if any case failed, so the notebook cell turns red for the student and for nbval.

Exercises are looked up by name in :mod:`seqrl.grading.catalog`, imported on the first check, so
``import seqrl.grading`` stays cheap. Every ``CheckResult`` is also handed to the listeners
registered with :func:`add_listener` (or gathered with :func:`collect_results`): that is the hook
the grader uses to collect scores from a student's notebook.

torch and numpy are imported only when an output of that type is compared.
"""
from __future__ import annotations

import copy
import math
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Case",
    "WrongAnswer",
    "Exercise",
    "CaseResult",
    "CheckResult",
    "UnknownExerciseError",
    "register",
    "get_exercise",
    "known_exercises",
    "check",
    "compare",
    "add_listener",
    "remove_listener",
    "collect_results",
]

NOT_IMPLEMENTED = "not implemented yet"


@dataclass(frozen=True)
class Case:
    """One input to an exercise: ``fn(*args, **kwargs)``, described in words for the report."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class WrongAnswer:
    """A typical mistake written as code, and the hint to show when a student's output matches it.

    ``name`` is a short phrase for the mistake ("reward-to-go off by one"); ``hint`` says how to fix it.
    """

    name: str
    fn: Callable[..., Any]
    hint: str


@dataclass
class Exercise:
    """A checkable exercise: the reference, the cases, and the known wrong answers."""

    name: str
    reference: Callable[..., Any]
    cases: list[Case]
    wrong_answers: list[WrongAnswer] = field(default_factory=list)
    points_per_case: float = 1
    rtol: float = 1e-4
    atol: float = 1e-6

    def __post_init__(self) -> None:
        if not self.cases:
            raise ValueError(f"exercise {self.name!r} has no cases")

    @property
    def max_points(self) -> float:
        """Points for a fully correct answer."""
        return self.points_per_case * len(self.cases)


@dataclass
class CaseResult:
    """The outcome of one case: passed or not, why, and the wrong answers the output matched."""

    description: str
    passed: bool
    message: str = ""
    looks_like: list[str] = field(default_factory=list)
    raised: bool = False  # the function raised instead of returning an output


@dataclass
class CheckResult:
    """The outcome of ``check``: counts, points and per-case messages, as plain data."""

    name: str
    passed: int
    total: int
    points: float
    max_points: float
    cases: list[CaseResult]
    diagnosis: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every case passed."""
        return self.passed == self.total

    @property
    def messages(self) -> list[str]:
        """One line per case, as printed in the report (without the tick or cross)."""
        return [_case_line(case) for case in self.cases]

    def summary(self) -> str:
        """The one-line score, e.g. ``discounted_returns: 5/7 cases passed, 5/7 points``."""
        return (
            f"{self.name}: {self.passed}/{self.total} cases passed, "
            f"{_fmt_points(self.points)}/{_fmt_points(self.max_points)} points"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the grader's gradebook)."""
        return {**asdict(self), "ok": self.ok, "messages": self.messages}


class UnknownExerciseError(KeyError):
    """``check`` was given a name that no registered or catalogued exercise has."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise, *, replace: bool = False) -> Exercise:
    """Make ``exercise`` available to ``check`` under its name (twice only with ``replace=True``)."""
    if exercise.name in _REGISTRY and not replace and _REGISTRY[exercise.name] is not exercise:
        raise ValueError(f"an exercise named {exercise.name!r} is already registered (pass replace=True)")
    _REGISTRY[exercise.name] = exercise
    return exercise


def known_exercises() -> list[str]:
    """Names of every exercise that ``check`` accepts: the registered ones and the catalogue's."""
    from .catalog import CATALOG

    return sorted(set(_REGISTRY) | set(CATALOG))


def get_exercise(name: str) -> Exercise:
    """The exercise called ``name``, built from the catalogue on first use."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    from .catalog import CATALOG

    if name not in CATALOG:
        raise UnknownExerciseError(
            f"no exercise named {name!r}; known exercises: {', '.join(known_exercises()) or '(none)'}"
        )
    return register(CATALOG[name]())


# ---------------------------------------------------------------------------------------------
# Listeners: how a grader gathers results from a notebook it runs

_LISTENERS: list[Callable[[CheckResult], None]] = []


def add_listener(listener: Callable[[CheckResult], None]) -> None:
    """Call ``listener(result)`` after every ``check`` (before it raises on failure)."""
    _LISTENERS.append(listener)


def remove_listener(listener: Callable[[CheckResult], None]) -> None:
    """Stop calling ``listener``."""
    _LISTENERS.remove(listener)


@contextmanager
def collect_results() -> Iterator[list[CheckResult]]:
    """``with collect_results() as results:`` gathers every ``CheckResult`` made inside the block."""
    results: list[CheckResult] = []
    add_listener(results.append)
    try:
        yield results
    finally:
        remove_listener(results.append)


# ---------------------------------------------------------------------------------------------
# Comparing outputs


def compare(expected: Any, got: Any, rtol: float = 1e-4, atol: float = 1e-6) -> str | None:
    """``None`` if ``got`` matches ``expected`` (allclose-style), else a message saying how it differs.

    Handles torch tensors, numpy arrays, Python numbers, and tuples/lists/dicts of these.
    """
    if _is_tensor(expected):
        return _compare_arrays(expected, got, rtol, atol, kind="torch.Tensor")
    if _is_ndarray(expected):
        return _compare_arrays(expected, got, rtol, atol, kind="numpy array")
    if isinstance(expected, bool):
        return None if got == expected else f"expected {expected}, got {_short(got)}"
    if isinstance(expected, (int, float)):
        return _compare_numbers(float(expected), got, rtol, atol)
    if isinstance(expected, (tuple, list)):
        return _compare_sequences(expected, got, rtol, atol)
    if isinstance(expected, Mapping):
        return _compare_mappings(expected, got, rtol, atol)
    return None if got == expected else f"expected {_short(expected)}, got {_short(got)}"


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter")


def _is_ndarray(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def _as_float64_numpy(value: Any) -> Any:
    """A float64 numpy copy of a tensor or array (on CPU, detached), for comparison and printing."""
    import numpy as np

    if _is_tensor(value):
        value = value.detach().cpu()
        value = value.double() if not value.is_complex() else value
        return value.numpy()
    return np.asarray(value, dtype=np.float64)


def _compare_arrays(expected: Any, got: Any, rtol: float, atol: float, kind: str) -> str | None:
    import numpy as np

    wanted_type = _is_tensor if kind == "torch.Tensor" else _is_ndarray
    if not wanted_type(got):
        return f"expected a {kind}, got {type(got).__name__}"
    expected_np, got_np = _as_float64_numpy(expected), _as_float64_numpy(got)
    if expected_np.shape != got_np.shape:
        return f"expected shape {tuple(expected_np.shape)}, got shape {tuple(got_np.shape)}"
    if np.isnan(got_np).any() and not np.isnan(expected_np).any():
        return f"got NaN: {_short(got_np)}"
    if np.allclose(got_np, expected_np, rtol=rtol, atol=atol, equal_nan=True):
        return None
    error = np.abs(got_np - expected_np)
    finite = error[np.isfinite(error)]
    detail = f" (max |error| {finite.max():.4g})" if finite.size else ""
    return f"expected {_short(expected_np)}, got {_short(got_np)}{detail}"


def _compare_numbers(expected: float, got: Any, rtol: float, atol: float) -> str | None:
    if _is_tensor(got) or _is_ndarray(got):
        if _as_float64_numpy(got).size != 1:
            return f"expected a number, got an array of shape {tuple(_as_float64_numpy(got).shape)}"
        got = float(_as_float64_numpy(got).reshape(-1)[0])
    if not isinstance(got, (int, float)):
        return f"expected a number, got {type(got).__name__}"
    if math.isnan(expected) and math.isnan(got):
        return None
    if abs(got - expected) <= atol + rtol * abs(expected):
        return None
    return f"expected {expected:.6g}, got {got:.6g}"


def _compare_sequences(expected: tuple | list, got: Any, rtol: float, atol: float) -> str | None:
    if not isinstance(got, (tuple, list)):
        return f"expected a {type(expected).__name__} of {len(expected)} items, got {type(got).__name__}"
    if len(got) != len(expected):
        return f"expected {len(expected)} items, got {len(got)}"
    for index, (want, have) in enumerate(zip(expected, got)):
        message = compare(want, have, rtol, atol)
        if message is not None:
            return f"item {index}: {message}"
    return None


def _compare_mappings(expected: Mapping, got: Any, rtol: float, atol: float) -> str | None:
    if not isinstance(got, Mapping):
        return f"expected a dict, got {type(got).__name__}"
    if set(got) != set(expected):
        return f"expected keys {sorted(map(str, expected))}, got {sorted(map(str, got))}"
    for key in expected:
        message = compare(expected[key], got[key], rtol, atol)
        if message is not None:
            return f"{key!r}: {message}"
    return None


def _short(value: Any, max_items: int = 8) -> str:
    """A compact rendering of a value: arrays rounded to 4 significant digits, long ones cut."""
    if _is_tensor(value) or _is_ndarray(value):
        flat = _as_float64_numpy(value).reshape(-1)
        items = ", ".join(f"{x:.4g}" for x in flat[:max_items])
        more = ", ..." if flat.size > max_items else ""
        return f"[{items}{more}]"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# Running a check


def _call(fn: Callable[..., Any], case: Case) -> Any:
    """``fn`` on fresh copies of the case's inputs, so a function that mutates them changes nothing."""
    return fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))


def _describe_exception(error: BaseException, fn: Callable[..., Any]) -> str:
    """``NotImplementedError`` → "not implemented yet"; anything else → type, message and the line
    of the student's code it came from (no traceback: the report stays one line per case)."""
    if isinstance(error, NotImplementedError):
        return NOT_IMPLEMENTED
    code = getattr(fn, "__code__", None)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if code is not None and frame.filename == code.co_filename]
    where = f" (in {frames[-1].name}, line {frames[-1].lineno})" if frames else ""
    return f"raised {type(error).__name__}: {error}{where}"


def _matching_wrong_answers(exercise: Exercise, case: Case, got: Any) -> list[str]:
    """Names of the wrong answers whose output on ``case`` matches ``got``."""
    matches = []
    for wrong in exercise.wrong_answers:
        try:
            wrong_output = _call(wrong.fn, case)
        except Exception:  # a wrong answer that cannot handle this case matches nothing
            continue
        if compare(wrong_output, got, exercise.rtol, exercise.atol) is None:
            matches.append(wrong.name)
    return matches


def _run_case(exercise: Exercise, case: Case, fn: Callable[..., Any]) -> CaseResult:
    expected = _call(exercise.reference, case)
    try:
        got = _call(fn, case)
    except Exception as error:
        return CaseResult(case.description, False, _describe_exception(error, fn), raised=True)
    message = compare(expected, got, exercise.rtol, exercise.atol)
    if message is None:
        return CaseResult(case.description, True)
    return CaseResult(case.description, False, message, _matching_wrong_answers(exercise, case, got))


def _diagnose(exercise: Exercise, cases: list[CaseResult]) -> list[str]:
    """Wrong answers that explain every failed case that returned an output (most specific first).

    If none explains them all, the wrong answers matched by any failed case.
    """
    compared = [case for case in cases if not case.passed and not case.raised]
    if not compared:
        return []
    names = [wrong.name for wrong in exercise.wrong_answers]
    everywhere = [name for name in names if all(name in case.looks_like for case in compared)]
    if everywhere:
        return everywhere
    return [name for name in names if any(name in case.looks_like for case in compared)]


def _case_line(case: CaseResult) -> str:
    line = case.description
    if case.message:
        line += f": {case.message}"
    if case.looks_like:
        line += f" (looks like: {', '.join(case.looks_like)})"
    return line


def _fmt_points(points: float) -> str:
    return f"{points:g}"


def _print_report(result: CheckResult) -> None:
    if result.cases and all(case.message == NOT_IMPLEMENTED for case in result.cases):
        print(f"✗ {result.name}: {NOT_IMPLEMENTED} (replace the `raise NotImplementedError` with your code)")
    else:
        print(f"Checking {result.name} on {result.total} cases:")
        for case in result.cases:
            print(f"  {'✓' if case.passed else '✗'} {_case_line(case)}")
        for hint in result.hints:
            print(f"Hint: {hint}")
    print(("✓ " if result.ok else "✗ ") + result.summary())


def check(
    exercise: str | Exercise,
    fn: Callable[..., Any],
    *,
    raise_on_failure: bool = True,
    verbose: bool = True,
) -> CheckResult:
    """Check ``fn`` against the exercise's reference on every case, print a report, return the result.

    Args:
        exercise: the exercise's name (see :func:`known_exercises`) or an :class:`Exercise`.
        fn: the student's implementation.
        raise_on_failure: raise ``AssertionError`` with the score line if any case failed.
        verbose: print the per-case report.

    Returns:
        A :class:`CheckResult`; it is also passed to every listener (see :func:`add_listener`).
    """
    spec = exercise if isinstance(exercise, Exercise) else get_exercise(exercise)
    if not callable(fn):
        raise TypeError(f"check({spec.name!r}, fn): fn must be a function, got {type(fn).__name__}")
    cases = [_run_case(spec, case, fn) for case in spec.cases]
    diagnosis = _diagnose(spec, cases)
    hints_by_name = {wrong.name: wrong.hint for wrong in spec.wrong_answers}
    passed = sum(case.passed for case in cases)
    result = CheckResult(
        name=spec.name,
        passed=passed,
        total=len(cases),
        points=passed * spec.points_per_case,
        max_points=spec.max_points,
        cases=cases,
        diagnosis=diagnosis,
        hints=[f"looks like: {name}: {hints_by_name[name]}" for name in diagnosis],
    )
    if verbose:
        _print_report(result)
    for listener in list(_LISTENERS):
        listener(result)
    if raise_on_failure and not result.ok:
        raise AssertionError(result.summary()) from None
    return result
