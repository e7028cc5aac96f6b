"""Finding submissions, naming them (student, exercise set), and assembling the cells to run.

Naming conventions (see docs/grading.md), for a notebook found under a submitted folder or zip:

1. ``<root>/<student>/.../<anything>.ipynb``: one folder per student (the first folder is the id);
2. ``<root>/<student>__<exercise>.ipynb``: a double underscore separates the two;
3. ``<root>/<name>.ipynb`` where ``name`` contains an exercise set's name (``alice_ex01_returns``,
   ``ex01_returns-bob``) or its number (``ex01``): the rest of the name is the student id;
4. otherwise the student id is the file's stem (for a file given on the command line: its folder).

A zip is read like a folder (in memory; nothing is extracted); if all its notebooks sit in one top
folder above the student folders, that folder is skipped. The exercise set comes from the notebook's
metadata ``seqrl.exercise_set`` first, the file name second.

Assembling (:func:`assemble`): the canonical notebook of the set (``solutions/<set>.ipynb``, cells
marked ``### SOLUTION ONLY`` dropped) is the program; each canonical cell that holds a solution region
is replaced by the student's matching cell, matched by cell id first, then by the function it
defines. Every other cell is the canonical one, so a student who deleted, edited or reordered the
check cells changes nothing. Cells after the last check cell are not run.
"""
from __future__ import annotations

import ast
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .exercises import BEGIN, END, SOLUTION_ONLY, student_source
from .sandbox import Cell

__all__ = [
    "CanonicalCell",
    "ExerciseSet",
    "InvalidNotebook",
    "Submission",
    "assemble",
    "discover",
    "exercise_set_of",
    "load_exercise_set",
    "read_notebook",
    "split_name",
]

MAX_NOTEBOOK_BYTES = 50 * 1024 * 1024
_DEF = re.compile(r"^(?:async\s+)?def\s+(\w+)", re.MULTILINE)
_SEPARATORS = "_-. +()[]"


class InvalidNotebook(ValueError):
    """A submission that is not a readable Jupyter notebook."""


# ---------------------------------------------------------------------------------------------
# The canonical notebook


@dataclass
class CanonicalCell:
    index: int
    cell_id: str | None
    kind: str  # "solution", "check" or "setup"
    source: str
    functions: list[str]
    checks: list[str]


@dataclass
class ExerciseSet:
    name: str
    path: Path
    cells: list[CanonicalCell]

    @property
    def checks(self) -> list[str]:
        """The check names called by the notebook's check cells, in order, each once."""
        names: list[str] = []
        for cell in self.cells:
            names.extend(name for name in cell.checks if name not in names)
        return names

    @property
    def solution_cells(self) -> list[CanonicalCell]:
        return [cell for cell in self.cells if cell.kind == "solution"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(part for part in source if isinstance(part, str))
    return source if isinstance(source, str) else ""


def _functions(source: str) -> list[str]:
    """Names of the functions a cell defines at its top level (regex: works on broken code too)."""
    return list(dict.fromkeys(_DEF.findall(source)))


def _check_calls(source: str) -> list[str]:
    """Exercise names in ``check("name", ...)`` calls of a cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called == "check" and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return names


_STUDENT_PLACEHOLDER = "replace this line with your code"


def load_exercise_set(path: Path) -> ExerciseSet:
    """The canonical notebook at ``path``: a solution notebook, or (fallback) a generated exercise one."""
    notebook = read_notebook(Path(path).read_bytes())
    name = exercise_set_of(notebook) or Path(path).stem
    cells = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _source(cell)
        if source.lstrip().startswith(SOLUTION_ONLY):
            continue
        lines = [line.strip() for line in source.split("\n")]
        marked = any(line.startswith((BEGIN, END)) for line in lines)
        placeholder = "raise NotImplementedError(" in source and _STUDENT_PLACEHOLDER in source
        checks = _check_calls(source)
        kind = "solution" if marked or placeholder else "check" if checks else "setup"
        cell_id = cell.get("id") if isinstance(cell.get("id"), str) else None
        cells.append(CanonicalCell(index, cell_id, kind, source, _functions(source), checks))
    return ExerciseSet(name, Path(path), cells)


# ---------------------------------------------------------------------------------------------
# Student notebooks


def read_notebook(data: bytes) -> dict:
    """The notebook JSON of a submission; raises :class:`InvalidNotebook` with the reason."""
    if not data.strip():
        raise InvalidNotebook("the file is empty")
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise InvalidNotebook(f"the file is too large ({len(data) // 2**20} MB)")
    try:
        notebook = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InvalidNotebook("not a text file (not UTF-8)") from None
    except RecursionError:
        raise InvalidNotebook("not valid JSON (nested too deeply)") from None
    except json.JSONDecodeError as error:
        raise InvalidNotebook(f"not valid JSON ({error.msg}, line {error.lineno} column {error.colno})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise InvalidNotebook("not a Jupyter notebook (no list of cells)")
    if not isinstance(notebook.get("nbformat", 4), int) or notebook.get("nbformat", 4) < 4:
        raise InvalidNotebook(f"an old notebook format (nbformat {notebook.get('nbformat')}); save it with Jupyter 4+")
    return notebook


def exercise_set_of(notebook: dict) -> str | None:
    """``metadata.seqrl.exercise_set`` if it is there and a string."""
    metadata = notebook.get("metadata")
    seqrl = metadata.get("seqrl") if isinstance(metadata, dict) else None
    name = seqrl.get("exercise_set") if isinstance(seqrl, dict) else None
    return name if isinstance(name, str) and name else None


def split_name(stem: str, known: list[str]) -> tuple[str | None, str | None]:
    """``(student, exercise_set)`` read from a file's stem; either may be None."""
    if "__" in stem:
        student, rest = stem.split("__", 1)
        _, exercise = split_name(rest, known)
        return student.strip(_SEPARATORS) or None, exercise or rest
    lowered = stem.lower()
    for name in sorted(known, key=len, reverse=True):
        at = lowered.find(name.lower())
        if at >= 0:
            rest = (stem[:at] + " " + stem[at + len(name):]).strip(_SEPARATORS)
            return _clean(rest), name
    match = re.search(r"(?<![a-z0-9])ex0*(\d+)(?![0-9])", lowered)
    if match:
        number = int(match.group(1))
        candidates = [name for name in known if re.match(rf"ex0*{number}(?![0-9])", name.lower())]
        if len(candidates) == 1:
            end = match.end()
            rest = (stem[:match.start()] + " " + stem[end:]).strip(_SEPARATORS)
            return _clean(rest), candidates[0]
    return None, None


def _clean(text: str) -> str | None:
    text = re.sub(r"[\s_\-.]+", "_", text).strip(_SEPARATORS)
    return text or None


@dataclass
class Submission:
    """One notebook handed in: who, which exercise set, where from, and its bytes (read once)."""

    student: str
    label: str  # the path shown in the gradebook
    data: bytes
    stem: str
    origin: Path  # the file on disk holding it (the notebook or the zip)
    name_set: str | None = None  # exercise set guessed from the file name
    notebook: dict | None = field(default=None, repr=False)


def _skip(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part in ("__MACOSX", ".ipynb_checkpoints") for part in parts)


def _entry(parts: tuple[str, ...], data: bytes, label: str, origin: Path, known: list[str], fallback: str) -> Submission:
    stem = Path(parts[-1]).stem
    name_student, name_set = split_name(stem, known)
    if len(parts) >= 2:
        student = parts[0]
    elif name_student:
        student = name_student
    elif name_set and fallback:  # "ex01_returns.ipynb" alone: the folder (or zip) it came in names the student
        student = fallback
    else:
        student = stem
    return Submission(student=student, label=label, data=data, stem=stem, origin=origin, name_set=name_set)


def discover(paths: list[Path], known: list[str]) -> list[Submission]:
    """Every notebook under ``paths`` (folders, zips or notebook files), named as the module says.

    Raises ``FileNotFoundError`` for a path that does not exist and ``ValueError`` for a file that
    is neither a notebook nor a zip.
    """
    found: list[Submission] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        if path.is_dir():
            for folder, subfolders, files in os.walk(path):
                subfolders[:] = sorted(name for name in subfolders if not _skip((name,)))
                for name in sorted(files):
                    file = Path(folder) / name
                    parts = file.relative_to(path).parts
                    if name.endswith(".zip") and not name.startswith(".") and zipfile.is_zipfile(file):
                        found.extend(_from_zip(file, known, outer=parts[:-1], label=f"{path.name}/{'/'.join(parts)}"))
                        continue
                    if not name.endswith(".ipynb") or name.startswith("."):
                        continue
                    found.append(_entry(parts, file.read_bytes(), f"{path.name}/{'/'.join(parts)}", file, known,
                                        path.resolve().name))
        elif zipfile.is_zipfile(path):
            found.extend(_from_zip(path, known))
        elif path.suffix == ".ipynb":
            found.append(_entry((path.name,), path.read_bytes(), path.name, path, known, path.resolve().parent.name))
        else:
            raise ValueError(f"{path}: not a notebook (.ipynb), a folder or a zip")
    return found


def _from_zip(path: Path, known: list[str], outer: tuple[str, ...] = (), label: str | None = None) -> list[Submission]:
    """The notebooks in a zip; ``outer`` are the folders above the zip inside a submitted folder."""
    label = label or path.name
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist()
                   if not info.is_dir() and info.filename.endswith(".ipynb") and not _skip(Path(info.filename).parts)]
        members.sort(key=lambda info: info.filename)
        parts = [tuple(p for p in Path(info.filename).parts if p not in ("", "/")) for info in members]
        tops = {part[0] for part in parts if len(part) > 1}
        strip = len(tops) == 1 and all(len(part) >= 3 for part in parts)
        found = []
        for info, member_parts in zip(members, parts):
            if strip:
                member_parts = member_parts[1:]
            with archive.open(info) as member:
                data = member.read(MAX_NOTEBOOK_BYTES + 1)  # a zip bomb stops here; read_notebook says "too large"
            found.append(_entry((*outer, *member_parts), data, f"{label}:{info.filename}", path, known, path.stem))
        return found


# ---------------------------------------------------------------------------------------------
# Putting the student's solution cells into the canonical notebook


def _strip_magics(source: str) -> str:
    """IPython magics and shell escapes (``%timeit``, ``!pip``) become ``pass``: this is plain Python."""
    lines = source.split("\n")
    if lines and lines[0].startswith("%%"):
        lines = ["pass"] + ["# " + line for line in lines[1:]]
    out = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "pass  # " + stripped
        out.append(line)
    return "\n".join(out)


def _student_cells(notebook: dict) -> list[tuple[str | None, str]]:
    cells = []
    for cell in notebook.get("cells", []):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            cell_id = cell.get("id") if isinstance(cell.get("id"), str) else None
            cells.append((cell_id, _source(cell)))
    return cells


def assemble(exercise: ExerciseSet, notebook: dict) -> tuple[list[Cell], list[str]]:
    """The cells to run for a student's ``notebook``, and notes on solution cells not found."""
    student = _student_cells(notebook)
    by_id = {cell_id: source for cell_id, source in student if cell_id}
    notes = []
    checks = [cell.index for cell in exercise.cells if cell.kind == "check"]
    last = max(checks) if checks else (exercise.cells[-1].index if exercise.cells else -1)
    cells: list[Cell] = []
    for cell in exercise.cells:
        if cell.index > last:
            break
        if cell.kind != "solution":
            label = f"<notebook cell {cell.index}>"
            cells.append(Cell(cell.index, cell.kind, cell.source, label))
            continue
        wanted = set(cell.functions)
        source = by_id.get(cell.cell_id) if cell.cell_id else None
        if source is not None and wanted and not wanted & set(_functions(source)):
            source = None  # the cell with that id no longer defines the function: look by name
        if source is None and wanted:
            defining = [text for _, text in student if wanted & set(_functions(text))]
            source = defining[-1] if defining else None
        if source is None and cell.cell_id in by_id:
            source = by_id[cell.cell_id]
        name = ", ".join(cell.functions) or f"cell {cell.index}"
        if source is None:
            notes.append(f"no solution cell for {name} in the notebook (left unimplemented)")
            source, _ = student_source(cell.source, exercise=exercise.name)
        cells.append(Cell(cell.index, "solution", _strip_magics(source), f"<student cell: {name}>"))
    return cells, notes
