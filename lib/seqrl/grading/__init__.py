"""Exercises and checks: ``check(name, fn)`` in a notebook, ``seqrl exercises`` to make student versions.

Importing this package is cheap: the exercises are built from :mod:`seqrl.grading.catalog` on the
first check, and the student-version generator lives in :mod:`seqrl.grading.exercises`.
"""
from .checks import (
    Case,
    CaseResult,
    CheckResult,
    Exercise,
    UnknownExerciseError,
    WrongAnswer,
    add_listener,
    check,
    collect_results,
    compare,
    get_exercise,
    known_exercises,
    register,
    remove_listener,
)

__all__ = [
    "Case",
    "CaseResult",
    "CheckResult",
    "Exercise",
    "UnknownExerciseError",
    "WrongAnswer",
    "add_listener",
    "check",
    "collect_results",
    "compare",
    "get_exercise",
    "known_exercises",
    "register",
    "remove_listener",
]
