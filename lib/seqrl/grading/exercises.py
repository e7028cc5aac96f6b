"""Student versions of the exercise notebooks: ``solutions/NAME.ipynb`` → ``exercises/NAME.ipynb``.

A solution cell marks the student's part with nbgrader's markers::

    def discounted_returns(rewards, gamma):
        ### BEGIN SOLUTION
        ### HINT: walk backwards from the last step.
        ...
        ### END SOLUTION

The student version replaces each marked region, at the marker's indentation, with the hint
comments (or ``# YOUR CODE HERE``) and ``raise NotImplementedError("...")``. Outputs and execution
counts are stripped; cells whose source starts with ``### SOLUTION ONLY`` are dropped; the notebook
metadata gains ``seqrl = {exercise_set, student_version, generated_from, generated_sha256}``.

The output is byte-deterministic. ``generated_sha256`` is the hash of the notebook's content
without that field, so a generated file that someone edited (a student doing the exercise in place)
is recognised, and regenerating moves it to ``NAME.ipynb.bak`` (``.bak1``, ...) instead of
overwriting it. Every write is atomic.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

__all__ = [
    "BEGIN",
    "END",
    "HINT",
    "SOLUTION_ONLY",
    "MarkerError",
    "student_source",
    "student_notebook",
    "render_student_notebook",
    "content_hash",
    "is_unedited",
    "backup_path",
    "Status",
    "plan",
    "main",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
HINT = "### HINT:"
SOLUTION_ONLY = "### SOLUTION ONLY"
DEFAULT_HINT = "# YOUR CODE HERE"

_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)")


class MarkerError(ValueError):
    """Solution markers that cannot be turned into a student version (unbalanced, nested, missing)."""


# ---------------------------------------------------------------------------------------------
# One cell


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _enclosing_function(lines: list[str], index: int, indent: str) -> str | None:
    """Name of the ``def`` that contains line ``index`` (the nearest one less indented above it)."""
    for line in reversed(lines[:index]):
        match = _DEF.match(line)
        if match and len(match.group(1)) < len(indent):
            return match.group(2)
    return None


def _replacement(hints: list[str], indent: str, name: str) -> list[str]:
    """The student's lines for one region: hint comments, then ``raise NotImplementedError``."""
    comments = [f"{indent}# Hint: {hint}" if hint else f"{indent}#" for hint in hints] or [indent + DEFAULT_HINT]
    return [*comments, f'{indent}raise NotImplementedError("{name}: replace this line with your code")']


def student_source(source: str, *, exercise: str, where: str = "cell") -> tuple[str, int]:
    """Replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region of one code cell.

    Args:
        source: the solution cell's source.
        exercise: the name used in ``NotImplementedError`` when the region is not inside a ``def``.
        where: how to name the cell in error messages (``"ex01.ipynb, cell 3"``).

    Returns:
        The student's source and the number of regions replaced.

    Raises:
        MarkerError: an ``END`` without ``BEGIN``, a ``BEGIN`` inside a region, or a region left open.
    """
    lines = source.split("\n")
    out: list[str] = []
    begin: int | None = None  # index of the open region's BEGIN line
    hints: list[str] = []
    regions = 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if begin is not None:
                raise MarkerError(f"{where}, line {index + 1}: {BEGIN!r} inside the region opened on line {begin + 1}")
            begin, hints = index, []
        elif stripped.startswith(END):
            if begin is None:
                raise MarkerError(f"{where}, line {index + 1}: {END!r} without a {BEGIN!r} before it")
            indent = _indent(lines[begin])
            name = _enclosing_function(lines, begin, indent) or exercise
            out.extend(_replacement(hints, indent, name))
            begin, regions = None, regions + 1
        elif begin is not None:
            if stripped.startswith(HINT):
                hints.append(stripped[len(HINT):].strip())
        else:
            out.append(line)
    if begin is not None:
        raise MarkerError(f"{where}, line {begin + 1}: {BEGIN!r} is never closed by {END!r}")
    return "\n".join(out), regions


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def _has_marker(source: str) -> bool:
    return any(line.strip().startswith((BEGIN, END)) for line in source.split("\n"))


# ---------------------------------------------------------------------------------------------
# One notebook


def _student_cell(cell: NotebookNode, *, exercise: str, where: str) -> tuple[NotebookNode, int]:
    """A copy of ``cell`` with its regions replaced and its outputs stripped."""
    cell = copy.deepcopy(cell)
    if cell.cell_type != "code":
        if _has_marker(cell.source):
            raise MarkerError(f"{where}: solution markers are only allowed in code cells, found in a {cell.cell_type} cell")
        return cell, 0
    source, regions = student_source(cell.source, exercise=exercise, where=where)
    if regions and _parses(cell.source) and not _parses(source):
        raise MarkerError(
            f"{where}: the student version is not valid Python; put {BEGIN!r} at the indentation of the code it replaces"
        )
    cell.source = source
    cell.outputs = []
    cell.execution_count = None
    return cell, regions


def student_notebook(solution: NotebookNode, *, name: str, exercise_set: str) -> NotebookNode:
    """The student version of a solution notebook, without the ``generated_sha256`` field yet.

    Args:
        solution: the solution notebook (not modified).
        name: the file name, e.g. ``"ex01_returns.ipynb"``, for messages and ``generated_from``.
        exercise_set: the exercise set's name, used where a region is not inside a function.

    Raises:
        MarkerError: bad markers, or no marked region at all.
    """
    student = copy.deepcopy(solution)
    cells, regions = [], 0
    for index, cell in enumerate(solution.cells):
        if cell.source.lstrip().startswith(SOLUTION_ONLY):
            continue
        new_cell, count = _student_cell(cell, exercise=exercise_set, where=f"{name}, cell {index}")
        cells.append(new_cell)
        regions += count
    if regions == 0:
        raise MarkerError(f"{name}: no {BEGIN!r} ... {END!r} region in any code cell; nothing for the student to do")
    student.cells = cells
    student.metadata["seqrl"] = {
        "exercise_set": exercise_set,
        "student_version": True,
        "generated_from": f"solutions/{name}",
    }
    return student


def _serialise(notebook: NotebookNode) -> str:
    """nbformat's JSON (indent 1, sorted keys) with a final newline: the same bytes every time."""
    return nbformat.writes(notebook) + "\n"


def content_hash(notebook: NotebookNode) -> str:
    """SHA-256 of the serialised notebook with ``metadata.seqrl.generated_sha256`` removed."""
    unhashed = copy.deepcopy(notebook)
    unhashed.metadata.get("seqrl", {}).pop("generated_sha256", None)
    return hashlib.sha256(_serialise(unhashed).encode("utf-8")).hexdigest()


def render_student_notebook(solution_path: Path) -> str:
    """The text of ``exercises/NAME.ipynb`` for ``solutions/NAME.ipynb``.

    The exercise set is ``metadata.seqrl.exercise_set`` of the solution, else the file's stem.
    """
    solution = nbformat.read(solution_path, as_version=4)
    exercise_set = solution.metadata.get("seqrl", {}).get("exercise_set") or solution_path.stem
    student = student_notebook(solution, name=solution_path.name, exercise_set=exercise_set)
    student.metadata.seqrl["generated_sha256"] = content_hash(student)
    return _serialise(student)


def is_unedited(text: str) -> bool:
    """True if ``text`` is a generated notebook whose content still matches its ``generated_sha256``."""
    try:
        notebook = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
        recorded = notebook.metadata["seqrl"]["generated_sha256"]
    except Exception:  # not JSON, not a notebook, or no recorded hash: treat it as a person's file
        return False
    return recorded == content_hash(notebook)


# ---------------------------------------------------------------------------------------------
# Files


def backup_path(target: Path) -> Path:
    """The first of ``NAME.bak``, ``NAME.bak1``, ``NAME.bak2``, ... that does not exist yet."""
    candidate, number = target.with_name(target.name + ".bak"), 0
    while candidate.exists():
        number += 1
        candidate = target.with_name(f"{target.name}.bak{number}")
    return candidate


def _back_up(target: Path) -> Path:
    """Copy ``target`` to a fresh backup path without ever replacing an existing file."""
    while True:
        backup = backup_path(target)
        try:
            os.link(target, backup)  # fails if backup exists: no race can overwrite a backup
            return backup
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system: exclusive create, then copy
            try:
                with open(backup, "xb") as copy_file, open(target, "rb") as original:
                    shutil.copyfileobj(original, copy_file)
                return backup
            except FileExistsError:
                continue


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(text.encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Status:
    """What regenerating one exercise would do: ``state`` is up-to-date, missing, outdated or edited."""

    target: Path
    state: str
    text: str


def plan(solutions: Path, out: Path) -> tuple[list[Status], list[Path]]:
    """The status of every exercise for ``solutions/*.ipynb``, and the stale files in ``out``.

    A stale file is an ``out/*.ipynb`` with no solution of the same name.
    """
    statuses = []
    sources = sorted(solutions.glob("*.ipynb"))
    for source in sources:
        target = out / source.name
        text = render_student_notebook(source)
        if not target.exists():
            state = "missing"
        else:
            existing = target.read_bytes().decode("utf-8", errors="replace")
            state = "up-to-date" if existing == text else "outdated" if is_unedited(existing) else "edited"
        statuses.append(Status(target, state, text))
    names = {source.name for source in sources}
    stale = sorted(path for path in out.glob("*.ipynb") if path.name not in names)
    return statuses, stale


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _report_check(statuses: list[Status], stale: list[Path]) -> int:
    problems = 0
    for status in statuses:
        if status.state == "missing":
            print(f"missing: {_shown(status.target)}")
        elif status.state in ("outdated", "edited"):
            print(f"out of date: {_shown(status.target)}" + (" (edited by hand)" if status.state == "edited" else ""))
        else:
            continue
        problems += 1
    for path in stale:
        print(f"stale: {_shown(path)} has no solution in solutions/ (delete it by hand if that is intended)")
    if problems or stale:
        print("run `seqrl exercises` (or `make exercises`) to regenerate")
        return 1
    print(f"exercises up to date ({len(statuses)} notebook{'' if len(statuses) == 1 else 's'})")
    return 0


def _write_all(statuses: list[Status], stale: list[Path]) -> int:
    written = 0
    for status in statuses:
        if status.state == "up-to-date":
            continue
        if status.state == "edited":
            backup = _back_up(status.target)
            print(f"{_shown(status.target)} was edited by hand; your version is kept in {_shown(backup)}")
        _atomic_write(status.target, status.text)
        print(f"wrote {_shown(status.target)}")
        written += 1
    for path in stale:
        print(f"stale: {_shown(path)} has no solution in solutions/; left in place")
    print(f"exercises: {written} written, {len(statuses) - written} already up to date")
    return 0


def main(solutions: Path, out: Path, check: bool = False) -> int:
    """``seqrl exercises [--check]``: regenerate ``out`` from ``solutions``, or report what is out of date.

    Returns the exit status: 0 when done (or up to date), 1 when ``check`` finds work to do,
    2 when ``solutions`` is not a folder or a solution's markers are broken.
    """
    solutions, out = Path(solutions), Path(out)
    if not solutions.is_dir():
        print(f"error: no solutions folder at {solutions}")
        return 2
    try:
        statuses, stale = plan(solutions, out)
    except MarkerError as error:
        print(f"error: {error}")
        return 2
    return _report_check(statuses, stale) if check else _write_all(statuses, stale)
