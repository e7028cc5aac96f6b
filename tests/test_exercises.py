"""Student versions: exercises/ is generated from solutions/, hides every solution, stays valid Python,
and regenerating never loses a student's work."""
from __future__ import annotations

import ast
import contextlib
import io
import shutil
from pathlib import Path

import nbformat
import pytest

from seqrl.grading import collect_results
from seqrl.grading.exercises import (
    BEGIN,
    END,
    HINT,
    MarkerError,
    content_hash,
    is_unedited,
    main,
    render_student_notebook,
    student_source,
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
SOLUTION_PATHS = sorted(SOLUTIONS.glob("*.ipynb"))
SOLUTION_IDS = [path.stem for path in SOLUTION_PATHS]


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _run_code_cells(notebook: nbformat.NotebookNode, name: str) -> dict:
    """Execute the code cells in one namespace, in this process (no kernel), printing to a buffer."""
    namespace: dict = {"__name__": "__main__"}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            exec(compile(cell.source, f"<{name} cell {index}>", "exec"), namespace)
    return namespace


def _solution_regions(source: str) -> list[str]:
    """The code lines (stripped, no hints) between the markers of one solution cell."""
    lines, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith(BEGIN) or stripped.startswith(END):
            inside = stripped.startswith(BEGIN)
        elif inside and stripped and not stripped.startswith(HINT):
            lines.append(stripped)
    return lines


def _notebook(*sources: str, exercise_set: str = "ex99_test") -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_markdown_cell("# A test exercise", id="intro")]
    cells += [nbformat.v4.new_code_cell(source, id=f"cell-{index}") for index, source in enumerate(sources)]
    return nbformat.v4.new_notebook(cells=cells, metadata={"seqrl": {"exercise_set": exercise_set}})


def _write(path: Path, notebook: nbformat.NotebookNode) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


SOLVED = f"""def double(x):
    {BEGIN}
    {HINT} multiply by two.
    return 2 * x
    {END}
"""


# ---------------------------------------------------------------------------------------------
# exercises/ is generated from solutions/


def test_there_is_at_least_one_solution_notebook():
    assert SOLUTION_PATHS, "solutions/ holds no notebooks"


def test_committed_exercises_are_up_to_date_with_solutions(tmp_path, capsys):
    assert main(SOLUTIONS, tmp_path, check=False) == 0
    generated = sorted(path.name for path in tmp_path.glob("*.ipynb"))
    committed = sorted(path.name for path in EXERCISES.glob("*.ipynb"))
    assert committed == generated, "run `seqrl exercises` (make exercises)"
    for name in generated:
        assert (EXERCISES / name).read_bytes() == (tmp_path / name).read_bytes(), f"exercises/{name} is out of date"
    assert main(SOLUTIONS, EXERCISES, check=True) == 0


@pytest.mark.parametrize("solution_path", SOLUTION_PATHS, ids=SOLUTION_IDS)
def test_student_version_hides_the_solution_and_stays_valid_python(solution_path: Path):
    solution = nbformat.read(solution_path, as_version=4)
    student = nbformat.read(EXERCISES / solution_path.name, as_version=4)
    student_by_id = {cell.get("id"): cell for cell in student.cells}
    hidden = 0
    for cell in _code_cells(solution):
        region = _solution_regions(cell.source)
        if region:
            student_lines = {line.strip() for line in student_by_id[cell.id].source.split("\n")}
            assert not student_lines & set(region), f"solution code left in cell {cell.id}"
            assert "raise NotImplementedError" in student_by_id[cell.id].source
            hidden += 1
    assert hidden >= 1
    for cell in _code_cells(student):
        assert BEGIN not in cell.source and END not in cell.source
        ast.parse(cell.source)  # the replacement kept the indentation valid
        assert cell.outputs == [] and cell.execution_count is None
    seqrl_meta = student.metadata.seqrl
    assert seqrl_meta.student_version is True
    assert seqrl_meta.generated_from == f"solutions/{solution_path.name}"
    assert seqrl_meta.generated_sha256 == content_hash(student)
    assert student.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("solution_path", SOLUTION_PATHS, ids=SOLUTION_IDS)
def test_solution_notebook_gets_full_points(solution_path: Path):
    solution = nbformat.read(solution_path, as_version=4)
    with collect_results() as results, contextlib.redirect_stdout(io.StringIO()):
        _run_code_cells(solution, solution_path.name)
    assert results, "the solution notebook runs no check"
    for result in results:
        assert result.ok and result.points == result.max_points, result.summary()


@pytest.mark.parametrize("solution_path", SOLUTION_PATHS, ids=SOLUTION_IDS)
def test_unsolved_student_notebook_scores_nothing_and_says_why(solution_path: Path):
    student = nbformat.read(EXERCISES / solution_path.name, as_version=4)
    printed = io.StringIO()
    with collect_results() as results, contextlib.redirect_stdout(printed), pytest.raises(AssertionError):
        _run_code_cells(student, solution_path.name)
    assert results and results[0].points == 0
    assert "not implemented yet" in printed.getvalue()


def test_ex01_solution_cell_becomes_hint_and_raise():
    text = render_student_notebook(SOLUTIONS / "ex01_returns.ipynb")
    student = nbformat.reads(text, as_version=4)
    cell = next(cell for cell in student.cells if cell.get("id") == "discounted-returns")
    assert cell.source.splitlines()[-2:] == [
        "    # Hint: walk backwards from the last step with G_t = r_t + gamma * G_{t+1}, starting from G_T = 0.",
        '    raise NotImplementedError("discounted_returns: replace this line with your code")',
    ]


# ---------------------------------------------------------------------------------------------
# The marker rules


def test_region_becomes_hint_and_raise_at_the_markers_indentation():
    source, regions = student_source(SOLVED, exercise="ex99")
    assert regions == 1
    assert source == (
        "def double(x):\n"
        "    # Hint: multiply by two.\n"
        '    raise NotImplementedError("double: replace this line with your code")\n'
    )


def test_region_without_hint_gets_the_generic_comment_and_the_exercise_name():
    source, _ = student_source(f"{BEGIN}\nanswer = 42\n{END}\nprint(answer)", exercise="ex99_test")
    assert source.split("\n") == [
        "# YOUR CODE HERE",
        'raise NotImplementedError("ex99_test: replace this line with your code")',
        "print(answer)",
    ]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (f"def f():\n    {BEGIN}\n    return 1\n", "never closed"),
        (f"def f():\n    return 1\n    {END}\n", "without a"),
        (f"def f():\n    {BEGIN}\n    {BEGIN}\n    return 1\n    {END}\n", "inside the region"),
    ],
    ids=["begin-without-end", "end-without-begin", "nested"],
)
def test_unbalanced_markers_raise_a_value_error_naming_notebook_and_cell(tmp_path, source, problem):
    path = _write(tmp_path / "solutions" / "ex99_test.ipynb", _notebook(SOLVED, source))
    with pytest.raises(ValueError, match=rf"ex99_test\.ipynb, cell 2, line \d+: .*{problem}"):
        render_student_notebook(path)
    assert main(path.parent, tmp_path / "exercises") == 2
    assert not (tmp_path / "exercises" / "ex99_test.ipynb").exists()


def test_a_solution_notebook_without_markers_is_an_error(tmp_path):
    path = _write(tmp_path / "ex99_test.ipynb", _notebook("x = 1"))
    with pytest.raises(MarkerError, match="ex99_test.ipynb: no '### BEGIN SOLUTION'"):
        render_student_notebook(path)


def test_a_marker_at_the_wrong_indentation_is_an_error(tmp_path):
    source = f"def f(x):\n{BEGIN}\n    return x\n{END}\n"
    path = _write(tmp_path / "ex99_test.ipynb", _notebook(source))
    with pytest.raises(MarkerError, match="not valid Python"):
        render_student_notebook(path)


def test_markers_in_a_markdown_cell_are_an_error(tmp_path):
    notebook = _notebook(SOLVED)
    notebook.cells.append(nbformat.v4.new_markdown_cell(f"{BEGIN}\nthe answer\n{END}"))
    path = _write(tmp_path / "ex99_test.ipynb", notebook)
    with pytest.raises(MarkerError, match="only allowed in code cells"):
        render_student_notebook(path)


def test_solution_only_cells_and_outputs_are_dropped(tmp_path):
    notebook = _notebook(SOLVED, "### SOLUTION ONLY\nassert double(2) == 4", "print(1)")
    notebook.cells[-1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    notebook.cells[-1].execution_count = 3
    student = nbformat.reads(render_student_notebook(_write(tmp_path / "ex99_test.ipynb", notebook)), as_version=4)
    sources = [cell.source for cell in student.cells]
    assert not any("SOLUTION ONLY" in source for source in sources) and len(sources) == 3
    assert student.cells[-1].outputs == [] and student.cells[-1].execution_count is None


def test_generation_is_byte_deterministic(tmp_path):
    path = _write(tmp_path / "ex99_test.ipynb", _notebook(SOLVED))
    first, second = render_student_notebook(path), render_student_notebook(path)
    assert first == second and first.endswith("}\n")
    assert is_unedited(first)


# ---------------------------------------------------------------------------------------------
# Never lose a student's work


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    solutions, out = tmp_path / "solutions", tmp_path / "exercises"
    _write(solutions / "ex99_test.ipynb", _notebook(SOLVED))
    assert main(solutions, out) == 0
    return solutions, out, out / "ex99_test.ipynb"


def _do_the_exercise(path: Path, answer: str) -> str:
    """Edit the student notebook in place, as a student in Jupyter would; return the saved text."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[1].source = f"def double(x):\n    return {answer}\n"
    nbformat.write(notebook, path)
    return path.read_text(encoding="utf-8")


def test_an_edited_exercise_is_backed_up_never_lost(tmp_path, capsys):
    solutions, out, target = _setup(tmp_path)
    generated = target.read_text(encoding="utf-8")

    first_attempt = _do_the_exercise(target, "x + x")
    assert main(solutions, out, check=True) == 1
    assert main(solutions, out) == 0
    assert target.read_text(encoding="utf-8") == generated
    assert (out / "ex99_test.ipynb.bak").read_text(encoding="utf-8") == first_attempt
    assert "ex99_test.ipynb.bak" in capsys.readouterr().out

    second_attempt = _do_the_exercise(target, "2 * x")
    assert main(solutions, out) == 0
    assert (out / "ex99_test.ipynb.bak").read_text(encoding="utf-8") == first_attempt  # never overwritten
    assert (out / "ex99_test.ipynb.bak1").read_text(encoding="utf-8") == second_attempt
    assert main(solutions, out, check=True) == 0


def test_a_corrupt_exercise_file_is_backed_up_too(tmp_path):
    solutions, out, target = _setup(tmp_path)
    target.write_bytes(b"{ not json \xff")
    assert main(solutions, out) == 0
    assert (out / "ex99_test.ipynb.bak").read_bytes() == b"{ not json \xff"


def test_an_unedited_outdated_exercise_is_replaced_without_a_backup(tmp_path):
    solutions, out, target = _setup(tmp_path)
    _write(solutions / "ex99_test.ipynb", _notebook(SOLVED, "print(double(3))"))
    assert main(solutions, out, check=True) == 1
    assert main(solutions, out) == 0
    assert "print(double(3))" in target.read_text(encoding="utf-8")
    assert not list(out.glob("*.bak*"))
    assert not list(out.glob(".*.tmp"))  # the atomic write cleaned up after itself


def test_check_reports_missing_and_stale_files_and_deletes_nothing(tmp_path, capsys):
    solutions, out = tmp_path / "solutions", tmp_path / "exercises"
    _write(solutions / "ex99_test.ipynb", _notebook(SOLVED))
    assert main(solutions, out, check=True) == 1
    assert "missing: " in capsys.readouterr().out
    assert main(solutions, out) == 0
    shutil.copy(out / "ex99_test.ipynb", out / "ex98_removed.ipynb")
    assert main(solutions, out, check=True) == 1
    assert "stale: " in capsys.readouterr().out
    assert main(solutions, out) == 0
    assert (out / "ex98_removed.ipynb").exists()
