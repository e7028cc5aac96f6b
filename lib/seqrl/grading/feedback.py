"""What the grader writes: the gradebook (CSV and JSON), one Markdown feedback file per student, and
the summary table printed at the end.

Everything here is a pure function of the grades: rows sorted by student, exercise and submission,
no timestamps, no timings, no machine paths; so grading the same submissions twice writes the same
bytes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from .grader import STATUSES, Grade

__all__ = ["columns", "csv_text", "json_text", "feedback_files", "feedback_text", "summary", "write_all"]

FORMAT = "seqrl-gradebook/1"
OUTPUT_SHOWN = 4000  # characters of a notebook's output in its feedback


def _fmt(points: float) -> str:
    return f"{points:g}"


def _order(grades: list[Grade]) -> list[Grade]:
    return sorted(grades, key=lambda grade: (grade.student, grade.exercise, grade.submission))


def columns(grades: list[Grade]) -> list[str]:
    """The per-check columns: exercise sets in name order, each set's checks in notebook order."""
    position: dict[str, tuple[str, int]] = {}
    for grade in _order(grades):
        for index, score in enumerate(grade.checks):
            position.setdefault(score.column, (grade.exercise, index))
    return sorted(position, key=lambda column: position[column])


def csv_text(grades: list[Grade]) -> str:
    """student, exercise, submission, status, points, max_points, one column per check, reason."""
    check_columns = columns(grades)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "exercise", "submission", "status", "points", "max_points", *check_columns, "reason"])
    for grade in _order(grades):
        by_column = {score.column: _fmt(score.points) for score in grade.checks}
        writer.writerow([grade.student, grade.exercise, grade.submission, grade.status, _fmt(grade.points),
                         _fmt(grade.max_points), *(by_column.get(column, "") for column in check_columns), grade.reason])
    return buffer.getvalue()


def json_text(grades: list[Grade]) -> str:
    """Every row with its checks (points, case lines, hints) and problems; the statuses explained."""
    data = {"format": FORMAT, "statuses": STATUSES, "rows": [grade.to_dict() for grade in _order(grades)]}
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Feedback for students


def _file_name(student: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", student).strip("._") or "student"
    if safe != student:  # two ids that clean up the same must not share a file
        safe += "-" + hashlib.sha256(student.encode("utf-8")).hexdigest()[:6]
    return safe + ".md"


def feedback_text(student: str, grades: list[Grade]) -> str:
    """One student's feedback: a table of their exercises, then each check's cases and hints."""
    lines = [f"# Feedback for {student}", "", "| exercise | points | status |", "|---|---|---|"]
    for grade in grades:
        lines.append(f"| {grade.exercise or '?'} | {_fmt(grade.points)}/{_fmt(grade.max_points)} | {grade.status} |")
    for grade in grades:
        lines += ["", f"## {grade.exercise or grade.submission}: {_fmt(grade.points)}/{_fmt(grade.max_points)} points ({grade.status})",
                  "", f"Submission: `{grade.submission}`", "", f"{STATUSES.get(grade.status, grade.status).capitalize()}."]
        if grade.status not in ("ok", "partial", "failed"):
            lines += ["", f"Reason: {grade.reason}"]
        for score in grade.checks:
            title = f"{score.check} (hidden tests)" if score.hidden else score.check
            lines += ["", f"### {'✓' if score.points >= score.max_points else '✗'} {title}: "
                          f"{score.passed}/{score.total} cases passed, {_fmt(score.points)}/{_fmt(score.max_points)} points", ""]
            if score.hidden:
                lines.append("The hidden tests' cases are not shown.")
            else:
                lines += [f"- {line}" for line in score.lines]
            for hint in score.hints:
                lines += ["", f"**Hint:** {hint}"]
            if score.reference_called:
                lines += ["", "Your code called the library's reference implementation, which graded exercises do "
                              "not allow: those cases get no points. Write the function yourself."]
        if grade.problems:
            lines += ["", "### Problems while running your notebook", ""]
            lines += [f"- {problem}" for problem in grade.problems]
        if grade.output.strip():
            shown = grade.output if len(grade.output) <= OUTPUT_SHOWN else grade.output[:OUTPUT_SHOWN] + "\n[...]"
            fence = "````" if "```" in shown else "```"
            lines += ["", "### Output of your notebook", "", fence + "text", shown.rstrip("\n"), fence]
    return "\n".join(lines) + "\n"


def feedback_files(grades: list[Grade]) -> dict[str, str]:
    """File name -> Markdown, one per student."""
    by_student: dict[str, list[Grade]] = defaultdict(list)
    for grade in _order(grades):
        by_student[grade.student].append(grade)
    return {_file_name(student): feedback_text(student, rows) for student, rows in sorted(by_student.items())}


# ---------------------------------------------------------------------------------------------
# The summary table


def summary(grades: list[Grade]) -> str:
    """Per exercise set: submissions, mean and full marks, and the count of each status."""
    statuses = [status for status in STATUSES if any(grade.status == status for grade in grades)]
    by_set: dict[str, list[Grade]] = defaultdict(list)
    for grade in grades:
        by_set[grade.exercise or "(unknown)"].append(grade)
    header = ["exercise", "n", "mean", "max", "full", *statuses]
    rows = []
    for name, rows_of_set in sorted(by_set.items()):
        counts = Counter(grade.status for grade in rows_of_set)
        top = max((grade.max_points for grade in rows_of_set), default=0)
        mean = sum(grade.points for grade in rows_of_set) / len(rows_of_set)
        full = sum(1 for grade in rows_of_set if grade.max_points and grade.points >= grade.max_points)
        rows.append([name, str(len(rows_of_set)), f"{mean:.2f}", _fmt(top), str(full), *(str(counts.get(s, 0)) for s in statuses)])
    counts = Counter(grade.status for grade in grades)
    rows.append(["all", str(len(grades)), "", "", str(sum(1 for g in grades if g.max_points and g.points >= g.max_points)),
                 *(str(counts.get(s, 0)) for s in statuses)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    render = lambda row: "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)  # noqa: E731
                                   for i, (cell, width) in enumerate(zip(row, widths)))
    out = [render(header), render(["-" * width for width in widths]), *map(render, rows[:-1]), render(rows[-1])]
    return "\n".join(out)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8", newline="")
    temporary.replace(path)


def write_all(grades: list[Grade], csv_path: Path, json_path: Path | None = None,
              feedback_dir: Path | None = None) -> list[Path]:
    """Write the gradebook (and feedback); return the paths written."""
    written = [Path(csv_path)]
    _write(Path(csv_path), csv_text(grades))
    if json_path is not None:
        _write(Path(json_path), json_text(grades))
        written.append(Path(json_path))
    if feedback_dir is not None:
        for name, text in feedback_files(grades).items():
            _write(Path(feedback_dir) / name, text)
            written.append(Path(feedback_dir) / name)
    return written
