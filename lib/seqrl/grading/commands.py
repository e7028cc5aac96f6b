"""``seqrl grade`` (the instructor's) and ``seqrl check`` (a student's), behind :mod:`seqrl.cli`.

Exit status of ``seqrl grade``: 0 when every submission got a row, whatever the students scored;
1 when the grader itself failed on some submission (``grader-error`` rows); 2 for bad arguments
(a missing folder, broken hidden tests). ``seqrl check``: 0 when every check passes, 1 otherwise,
2 when it cannot run (no such file).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

__all__ = ["grade_command", "check_command"]


def _solutions(given: Path | None, root: Path) -> Path:
    if given is not None:
        return given
    for name in ("solutions", "exercises"):
        if (root / name).is_dir() and any((root / name).glob("*.ipynb")):
            return root / name
    return root / "solutions"


def grade_command(submissions: list[Path], *, out: Path, json_path: Path | None, jobs: int, timeout: float,
                  memory_mb: int, hidden_tests: Path | None, feedback: Path | None, solutions: Path | None,
                  watch: list[Path], isolate: bool, root: Path) -> int:
    from .feedback import summary, write_all
    from .grader import Grader, GraderError, load_hidden_tests

    started = time.monotonic()
    try:
        missing = [str(path) for path in submissions if not Path(path).exists()]
        if missing:
            raise GraderError(f"no such file or folder: {', '.join(missing)}")
        if out.suffix.lower() != ".csv":
            raise GraderError(f"--out should name a .csv file, got {out}")
        hidden = load_hidden_tests(hidden_tests) if hidden_tests is not None else None
        if (root / "solutions").is_dir():  # in the repository: its code must not change either
            watch = [*watch, *(path for path in (root / "lib", root / "exercises") if path.is_dir())]
        grader = Grader(_solutions(solutions, root), hidden=hidden, timeout=timeout, memory_mb=memory_mb, jobs=jobs,
                        isolate=isolate, watch=watch, unreadable=[p for p in (out.resolve().parent / out.name,
                                                                              feedback) if p is not None])
        grades = grader.grade(submissions)
    except GraderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json_path = json_path or out.with_suffix(".json")
    written = write_all(grades, out, json_path, feedback)
    print(summary(grades))
    students = len({grade.student for grade in grades})
    print(f"\ngraded {len(grades)} notebook{'s' * (len(grades) != 1)} from {students} student{'s' * (students != 1)} "
          f"in {time.monotonic() - started:.1f} s with {jobs} job{'s' * (jobs != 1)}")
    print(f"wrote {out}, {json_path}" + (f", {len(written) - 2} feedback file(s) in {feedback}" if feedback else ""))
    failures = [grade for grade in grades if grade.status == "grader-error"]
    for grade in failures:
        print(f"grader error on {grade.submission}: {grade.reason}", file=sys.stderr)
    return 1 if failures else 0


def check_command(notebook: Path, *, timeout: float, memory_mb: int, solutions: Path | None, root: Path) -> int:
    from .grader import Grader, GraderError
    from .submissions import discover

    if not notebook.is_file():
        print(f"error: no such notebook: {notebook}", file=sys.stderr)
        return 2
    try:
        grader = Grader(_solutions(solutions, root), timeout=timeout, memory_mb=memory_mb, jobs=1, verbose=True,
                        protect_files=False)
        submission = discover([notebook], grader.exercise_sets)[0]
        scratch = Path(tempfile.mkdtemp(prefix="seqrl-check-"))
        print(f"checking {notebook} (your code runs in a separate process; up to {timeout:g} s)\n")
        grade = grader._grade_safely(submission, scratch, [], None)
    except GraderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if grade.problems:
        print("\nProblems while running your notebook:")
        for problem in grade.problems:
            print(f"  - {problem}")
    print(f"\nscore: {grade.points:g}/{grade.max_points:g} points, status {grade.status}"
          + (f" ({grade.reason})" if grade.status not in ("ok", "partial", "failed") else ""))
    print("(the course's grader runs these same checks, and may add hidden tests)")
    return 0 if grade.status == "ok" else 1
