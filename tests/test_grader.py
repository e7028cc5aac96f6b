"""The auto-grader: the reference earns full points, a wrong answer its hint, and no submission, however
hostile, gains points, escapes its scratch folder, or changes another submission's grade.

One grading run over ~40 submissions (the stored ones in tests/grader_submissions/, a zip, and some
generated here because they need this run's paths) is shared by most tests; each test reads its rows.
The stored notebooks are student copies of exercises/*.ipynb written by :func:`write_stored_fixtures`
(``python tests/test_grader.py`` rewrites them).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = Path(__file__).resolve().parent / "grader_submissions"
TIMEOUT = 8.0  # seconds per submission: only the looping one uses it all
MEMORY_MB = 1024

# ---------------------------------------------------------------------------------------------
# Student code

RETURNS_OK = '''def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """My reward-to-go."""
    returns = torch.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns
'''

RETURNS_OFF_BY_ONE = '''def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    returns = torch.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running - rewards[t]  # oops: G_t without r_t
    return returns
'''

RETURNS_NO_DISCOUNT = '''def discounted_returns(rewards, gamma):
    return torch.flip(torch.cumsum(torch.flip(rewards, [0]), 0), [0])
'''

RETURNS_REVERSED = '''def discounted_returns(rewards, gamma):
    out, running = [], 0.0
    for r in reversed(rewards.tolist()):
        running = r + gamma * running
        out.append(running)
    return torch.tensor(out, dtype=rewards.dtype)  # forgot to reverse
'''

BELIEF_OK = '''def belief_update(belief, action, observation, T, Z):
    predicted = belief @ T[action]
    unnormalised = Z[action, :, observation] * predicted
    return unnormalised / unnormalised.sum()
'''

BELIEF_UNNORMALISED = '''def belief_update(belief, action, observation, T, Z):
    return Z[action, :, observation] * (belief @ T[action])
'''

BELIEF_TRANSPOSED = '''def belief_update(belief, action, observation, T, Z):
    p = Z[action, :, observation] * (T[action] @ belief)
    return p / p.sum()
'''

REINFORCE_OK = '''def reinforce_surrogate(logprobs, rewards, mask, gamma, baseline):
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    advantages = (returns - baseline).detach()
    return -(advantages * logprobs * mask).sum() / mask.sum()
'''

REINFORCE_SIGN = REINFORCE_OK.replace("return -(advantages", "return (advantages")

ADVERSARIAL = {
    "loops_forever": '''def belief_update(belief, action, observation, T, Z):
    while True:
        pass
''',
    "os_exit": '''import os
os._exit(3)
''' + RETURNS_OK,
    "sys_exit": '''import sys

def discounted_returns(rewards, gamma):
    sys.exit("I give up")
''',
    "memory_bomb": '''blocks = []
while True:
    blocks.append(b"x" * (64 * 2**20))
''' + BELIEF_OK,
    "raises_everywhere": '''raise ValueError("nothing works")
''' + RETURNS_OK,
    "syntax_error": '''def discounted_returns(rewards, gamma)
    return rewards
''',
    "patches_check": '''import seqrl.grading as grading
import seqrl.grading.checks as checks

def discounted_returns(rewards, gamma):
    return torch.zeros_like(rewards)

def check(*args, **kwargs):
    print("✓ discounted_returns: 7/7 cases passed, 7/7 points")

checks.compare = lambda *args, **kwargs: None
checks.CheckResult.ok = property(lambda self: True)
grading.check = checks.check = check
''',
    "chdir": '''import os
os.chdir("/")
''' + RETURNS_OK,
    "calls_reference_returns": '''import seqrl.rl
from seqrl.grading import get_exercise
from seqrl.grading.catalog import returns as catalog

def discounted_returns(rewards, gamma):
    if gamma == 0.9:
        return seqrl.rl.discounted_returns(rewards, gamma)
    if gamma == 0.0:
        return catalog._returns_reference(rewards, gamma)
    return get_exercise("discounted_returns").reference(rewards, gamma)
''',
    "calls_reference_belief": '''from seqrl.pomdp import TabularPOMDP, belief_update as library_update

def belief_update(belief, action, observation, T, Z):
    model = TabularPOMDP(T, Z, np.zeros((T.shape[1], T.shape[0])), np.full(T.shape[1], 1 / T.shape[1]), 0.0, 0)
    return library_update(belief, action, observation, model)
''',
    "forges_results": '''import json, os

print("✓ discounted_returns: 7/7 cases passed, 7/7 points")
for fd in range(3, 64):
    try:
        if os.path.realpath(f"/proc/self/fd/{fd}").startswith("pipe:") or "pipe" in os.readlink(f"/proc/self/fd/{fd}"):
            for i in range(7):
                line = {"t": "case", "check": "discounted_returns", "i": i, "hidden": False, "nonce": "guess",
                        "value": {"t": "float", "v": (1.0).hex()}}
                os.write(fd, (json.dumps(line) + "\\n").encode())
    except OSError:
        pass

def discounted_returns(rewards, gamma):
    return rewards * 0
''',
    "kills_grader": '''import os, signal, subprocess
for attempt in (lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: subprocess.run(["true"])):
    try:
        attempt()
    except Exception as error:
        print("refused:", error)
''' + RETURNS_OK,
    "chatty": '''print("x" * 1_000_000)
''' + BELIEF_OK,
}


# ---------------------------------------------------------------------------------------------
# Making student notebooks from the exercise notebooks


def student_notebook(exercise_set: str, solution: str | None = None, *, metadata: str | None = "keep",
                     every_cell: str = "", drop_checks: bool = False, reverse: bool = False, extra_cell: str = "") -> str:
    """A student's copy of ``exercises/<exercise_set>.ipynb`` with ``solution`` as the solution cell.

    ``metadata``: "keep", None (no seqrl metadata) or another exercise set name.
    """
    notebook = json.loads((ROOT / "exercises" / f"{exercise_set}.ipynb").read_text(encoding="utf-8"))
    cells = []
    for cell in notebook["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code":
            if solution is not None and "raise NotImplementedError(" in source:
                source = solution
            if drop_checks and "check(" in source:
                continue
            if every_cell:
                source = every_cell + "\n" + source
            cell["execution_count"] = 1
            cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["(the student's own run)\n"]}]
        cell["source"] = source
        cells.append(cell)
    if extra_cell:
        cells.append({"cell_type": "code", "execution_count": None, "id": "student-extra", "metadata": {},
                      "outputs": [], "source": extra_cell})
    notebook["cells"] = cells[::-1] if reverse else cells
    if metadata is None:
        notebook["metadata"].pop("seqrl", None)
    elif metadata != "keep":
        notebook["metadata"]["seqrl"]["exercise_set"] = metadata
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def stored_fixtures() -> dict[str, str]:
    """Relative path -> file text of every stored submission."""
    files = {
        "alice/ex01_returns.ipynb": student_notebook("ex01_returns", RETURNS_OK),
        "alice/ex02_belief.ipynb": student_notebook("ex02_belief", BELIEF_OK),
        "alice/ex03_reinforce.ipynb": student_notebook("ex03_reinforce", REINFORCE_OK),
        "bob/ex01_returns.ipynb": student_notebook("ex01_returns", RETURNS_OFF_BY_ONE),
        "bob/ex02_belief.ipynb": student_notebook("ex02_belief", BELIEF_UNNORMALISED),
        "bob/ex03_reinforce.ipynb": student_notebook("ex03_reinforce", REINFORCE_SIGN),
        "carol_ex02_belief.ipynb": student_notebook("ex02_belief", BELIEF_OK, metadata=None),
        "ex01_returns-dave.ipynb": student_notebook("ex01_returns", RETURNS_OK, metadata=None),
        "erin__ex01_returns.ipynb": student_notebook("ex01_returns"),  # handed in untouched
        "reordered/ex01_returns.ipynb": student_notebook(
            "ex01_returns", RETURNS_OK, drop_checks=True, reverse=True,
            extra_cell="from seqrl.grading import check\ncheck = lambda *args, **kwargs: None"),
        "unknown_set/ex99_mystery.ipynb": student_notebook("ex01_returns", RETURNS_OK, metadata="ex99_mystery"),
        "nameless/homework.ipynb": student_notebook("ex01_returns", RETURNS_OK, metadata=None),
        "not_json/ex01_returns.ipynb": '{"cells": [ this is not JSON\n',
        "empty/ex01_returns.ipynb": "",
        "raises_everywhere/ex01_returns.ipynb": student_notebook(
            "ex01_returns", ADVERSARIAL["raises_everywhere"], every_cell='raise RuntimeError("every cell raises")'),
    }
    sets = {"loops_forever": "ex02_belief", "memory_bomb": "ex02_belief", "calls_reference_belief": "ex02_belief",
            "chatty": "ex02_belief"}
    for name, code in ADVERSARIAL.items():
        if name == "raises_everywhere":
            continue
        exercise_set = sets.get(name, "ex01_returns")
        files[f"{name}/{exercise_set}.ipynb"] = student_notebook(exercise_set, code)
    return files


def write_stored_fixtures(folder: Path = STORED) -> None:
    """(Re)write tests/grader_submissions/ from the exercise notebooks."""
    for old in folder.rglob("*.ipynb"):  # (conftest.py there keeps nbval from running them)
        old.unlink()
    for relative, text in stored_fixtures().items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


HIDDEN_TESTS = '''"""Hidden tests for ex01: two more cases for discounted_returns."""
import torch

from seqrl.grading import Case, Exercise


def _reference(rewards, gamma):
    from seqrl.rl import discounted_returns

    return discounted_returns(rewards, gamma)


def more_returns():
    cases = [
        Case((torch.tensor([2.0, -1.0, 0.5]), 0.8), description="hidden: three steps, gamma 0.8"),
        Case((torch.ones(5), 0.5), description="hidden: five ones, gamma 0.5"),
    ]
    return Exercise("discounted_returns (hidden)", _reference, cases)


HIDDEN = {"discounted_returns": more_returns}
PROTECT = ["seqrl.rl.gae"]
'''


def _generated(folder: Path, hidden: Path, outside: Path, solutions: Path) -> dict[str, str]:
    """Submissions that need this run's paths: they attack the hidden tests and write outside."""
    hidden_file = hidden / "ex01_returns.py"
    reads_hidden = f'''import os
for attempt in (lambda: open({str(hidden_file)!r}).read(), lambda: os.listdir({str(hidden)!r}),
                lambda: open({str(hidden_file)!r}, "w").write("HIDDEN = {{}}"),
                lambda: os.remove({str(hidden_file)!r}),
                lambda: open({str(folder / "alice" / "ex01_returns.ipynb")!r}).read(),  # another student's work
                lambda: open({str(solutions / "ex01_returns.ipynb")!r}).read()):
    try:
        print("STOLEN", attempt())
    except Exception as error:
        print("refused:", error)
''' + RETURNS_OK
    writes_outside = f'''import os, pathlib, subprocess
import numpy as np
for attempt in (lambda: open({str(outside / "pwned.txt")!r}, "w").write("x"),
                lambda: pathlib.Path({str(ROOT / ".grader_test_pwned")!r}).write_text("x"),
                lambda: np.save({str(outside / "array.npy")!r}, np.zeros(3)),
                lambda: open({str(folder / "alice" / "ex01_returns.ipynb")!r}, "w").write("{{}}"),
                lambda: os.system("touch {outside / 'shell.txt'}"),
                lambda: subprocess.run(["touch", {str(outside / "process.txt")!r}])):
    try:
        attempt()
    except Exception as error:
        print("refused:", error)
open("inside_scratch.txt", "w").write("allowed")
''' + RETURNS_OK
    sqlite_outside = f'''import sqlite3
try:  # sqlite opens files in C: the audit hook never sees it, Landlock does
    sqlite3.connect({str(outside / "c_level.db")!r}).execute("create table t (x)")
except Exception as error:
    print("refused:", error)
''' + RETURNS_OK
    variants = {  # more students, to grade about 40 notebooks at once
        "s01": ("ex01_returns", RETURNS_NO_DISCOUNT), "s02": ("ex01_returns", RETURNS_REVERSED),
        "s03": ("ex02_belief", BELIEF_TRANSPOSED), "s04": ("ex01_returns", RETURNS_OK),
        "s05": ("ex02_belief", BELIEF_OK), "s06": ("ex03_reinforce", REINFORCE_OK),
        "s07": ("ex01_returns", RETURNS_OFF_BY_ONE), "s08": ("ex02_belief", BELIEF_UNNORMALISED),
        "s09": ("ex01_returns", RETURNS_NO_DISCOUNT), "s10": ("ex02_belief", BELIEF_OK),
        "s11": ("ex01_returns", RETURNS_REVERSED),
    }
    files = {f"reads_hidden/ex01_returns.ipynb": student_notebook("ex01_returns", reads_hidden),
             f"writes_outside/ex01_returns.ipynb": student_notebook("ex01_returns", writes_outside),
             f"sqlite_outside/ex01_returns.ipynb": student_notebook("ex01_returns", sqlite_outside)}
    for student, (exercise_set, code) in variants.items():
        files[f"{student}/{exercise_set}.ipynb"] = student_notebook(exercise_set, code)
    return files


# ---------------------------------------------------------------------------------------------
# The shared grading run


def _digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from seqrl.grading.feedback import csv_text, feedback_files, json_text
    from seqrl.grading.grader import Grader, load_hidden_tests

    base = tmp_path_factory.mktemp("grading")
    submissions = base / "submissions"
    shutil.copytree(STORED, submissions)
    hidden = base / "hidden"
    hidden.mkdir()
    (hidden / "ex01_returns.py").write_text(HIDDEN_TESTS, encoding="utf-8")
    outside = base / "outside"
    outside.mkdir()
    solutions = base / "solutions"  # a copy: the grader watches it, and other people edit the repository's
    shutil.copytree(ROOT / "solutions", solutions)
    for relative, text in _generated(submissions, hidden, outside, solutions).items():
        (submissions / relative).parent.mkdir(parents=True, exist_ok=True)
        (submissions / relative).write_text(text, encoding="utf-8")
    late = base / "late.zip"
    with zipfile.ZipFile(late, "w") as archive:  # one top folder above the student folders
        archive.writestr("handin/frank/ex01_returns.ipynb", student_notebook("ex01_returns", RETURNS_OK))
        archive.writestr("handin/grace/ex02_belief.ipynb", student_notebook("ex02_belief", BELIEF_TRANSPOSED))
    before = {"submissions": _digest(submissions), "hidden": _digest(hidden), "zip": _digest(base)["late.zip"]}

    grader = Grader(solutions, hidden=load_hidden_tests(hidden), timeout=TIMEOUT, memory_mb=MEMORY_MB, jobs=2)
    started = time.monotonic()
    grades = grader.grade([submissions, late], show_progress=False)
    seconds = time.monotonic() - started
    print(f"\ngraded {len(grades)} submissions with 2 jobs in {seconds:.1f} s")
    after = {"submissions": _digest(submissions), "hidden": _digest(hidden), "zip": _digest(base)["late.zip"]}
    rows = {grade.submission: grade for grade in grades}
    return {"grader": grader, "grades": grades, "rows": rows, "before": before, "after": after, "paths": [submissions, late],
            "outside": outside, "hidden": hidden, "seconds": seconds, "csv": csv_text(grades), "json": json_text(grades),
            "feedback": feedback_files(grades)}


def row(run, label: str):
    return run["rows"][f"submissions/{label}"]


def score(grade, column: str):
    return next(check for check in grade.checks if check.column == column)


# ---------------------------------------------------------------------------------------------
# Honest students


def test_the_reference_solutions_get_full_points(run):
    for label in ("alice/ex01_returns.ipynb", "alice/ex02_belief.ipynb", "alice/ex03_reinforce.ipynb"):
        grade = row(run, label)
        assert grade.status == "ok", (label, grade.reason)
        assert grade.points == grade.max_points > 0
    assert row(run, "alice/ex01_returns.ipynb").max_points == 7 + 2  # the public cases and the hidden ones


def test_a_wrong_answer_gets_partial_points_and_its_hint(run):
    grade = row(run, "bob/ex01_returns.ipynb")
    public = score(grade, "discounted_returns")
    assert grade.status in ("partial", "failed") and public.points < public.max_points
    assert public.diagnosis == ["reward-to-go off by one (r_t left out)"]
    assert any("G_t includes the reward of step t itself" in hint for hint in public.hints)
    assert "looks like: reward-to-go off by one" in grade.reason
    belief = row(run, "bob/ex02_belief.ipynb")
    assert score(belief, "belief_update").diagnosis == ["belief not normalised"]
    assert row(run, "bob/ex03_reinforce.ipynb").checks[0].diagnosis == ["sign flipped"]


def test_hidden_tests_count_and_are_scored_outside_the_sandbox(run):
    good, wrong = row(run, "alice/ex01_returns.ipynb"), row(run, "bob/ex01_returns.ipynb")
    assert score(good, "discounted_returns (hidden)").points == 2
    assert score(wrong, "discounted_returns (hidden)").points == 0
    assert "discounted_returns (hidden)" not in [check.column for check in row(run, "alice/ex02_belief.ipynb").checks]


def test_students_and_exercises_are_named_from_folders_file_names_and_zips(run):
    names = {(grade.student, grade.exercise) for grade in run["grades"]}
    assert {("alice", "ex01_returns"), ("carol", "ex02_belief"), ("dave", "ex01_returns"),
            ("erin", "ex01_returns"), ("frank", "ex01_returns"), ("grace", "ex02_belief")} <= names
    assert row(run, "carol_ex02_belief.ipynb").status == "ok"  # no metadata: the file name says ex02
    assert run["rows"]["late.zip:handin/frank/ex01_returns.ipynb"].status == "ok"


def test_an_untouched_exercise_says_not_implemented(run):
    grade = row(run, "erin__ex01_returns.ipynb")
    assert grade.status == "failed" and grade.points == 0
    assert "not implemented" in grade.reason


def test_deleted_and_reordered_check_cells_change_nothing(run):
    grade = row(run, "reordered/ex01_returns.ipynb")
    assert grade.status == "ok" and grade.points == grade.max_points


# ---------------------------------------------------------------------------------------------
# Broken and hostile submissions: each gets a row with a clear status, and costs only its own points


@pytest.mark.parametrize("label, status, reason", [
    ("loops_forever/ex02_belief.ipynb", "timeout", "time limit"),
    ("os_exit/ex01_returns.ipynb", "crashed", "exited with code 3"),
    ("memory_bomb/ex02_belief.ipynb", "memory", "ran out of memory"),
    ("raises_everywhere/ex01_returns.ipynb", "error", "RuntimeError: every cell raises"),
    ("syntax_error/ex01_returns.ipynb", "error", "SyntaxError"),
    ("not_json/ex01_returns.ipynb", "invalid-notebook", "not valid JSON"),
    ("empty/ex01_returns.ipynb", "invalid-notebook", "the file is empty"),
    ("unknown_set/ex99_mystery.ipynb", "unknown-exercise", "ex99_mystery"),
    ("nameless/homework.ipynb", "unknown-exercise", "cannot tell which exercise"),
])
def test_a_broken_submission_gets_its_status_and_reason(run, label, status, reason):
    grade = row(run, label)
    assert grade.status == status, grade.reason
    assert reason in grade.reason
    assert grade.points == 0


def test_sys_exit_fails_the_cases_and_the_notebook_goes_on(run):
    grade = row(run, "sys_exit/ex01_returns.ipynb")
    assert grade.status == "failed" and grade.points == 0
    assert "sys.exit('I give up')" in score(grade, "discounted_returns").lines[0]


def test_a_timeout_says_which_cases_did_not_finish(run):
    grade = row(run, "loops_forever/ex02_belief.ipynb")
    assert all("did not finish within the time limit" in line for line in grade.checks[0].lines)


def test_replacing_check_or_compare_gains_nothing(run):
    grade = row(run, "patches_check/ex01_returns.ipynb")
    assert grade.points == 0
    assert grade.status == "tampered"
    assert "seqrl.grading.checks.compare" in grade.reason


def test_forged_results_and_printed_scores_are_ignored(run):
    grade = row(run, "forges_results/ex01_returns.ipynb")
    assert grade.points == 0 and grade.status == "tampered"
    assert "7/7 cases passed" in grade.output  # printed, and ignored


def test_calling_the_library_reference_gets_no_points_and_says_why(run):
    grade = row(run, "calls_reference_returns/ex01_returns.ipynb")
    public = score(grade, "discounted_returns")
    assert public.points == 0 and public.reference_called
    assert "calling the library's reference implementation" in public.lines[1]
    assert "called the library's reference implementation" in grade.reason
    belief = row(run, "calls_reference_belief/ex02_belief.ipynb")
    assert belief.points == 0 and belief.checks[0].reference_called


def test_the_hidden_tests_can_be_neither_read_nor_overwritten(run):
    grade = row(run, "reads_hidden/ex01_returns.ipynb")
    assert grade.status == "tampered" and "reading the grader's protected files" in grade.reason
    assert grade.output.count("refused:") == 6 and "STOLEN" not in grade.output
    assert run["before"]["hidden"] == run["after"]["hidden"]
    assert score(grade, "discounted_returns (hidden)").points == 2  # still graded, from the grader's copy


def test_writes_outside_the_scratch_folder_are_refused_and_reported(run):
    grade = row(run, "writes_outside/ex01_returns.ipynb")
    assert grade.status == "tampered"
    assert "writing outside the submission's scratch folder" in grade.reason
    assert "starting" in grade.reason  # os.system and subprocess
    assert list(run["outside"].iterdir()) == []
    assert not (ROOT / ".grader_test_pwned").exists()
    assert grade.points == grade.max_points  # refusing is not penalising: the instructor decides


def test_the_kernel_blocks_writes_that_python_does_not_see(run):
    from seqrl.grading.landlock import abi_version

    if abi_version() == 0:
        pytest.skip("this kernel has no Landlock")
    grade = row(run, "sqlite_outside/ex01_returns.ipynb")
    assert "refused: unable to open database file" in grade.output
    assert not (run["outside"] / "c_level.db").exists()


def test_changing_the_working_directory_changes_nothing(run):
    grade = row(run, "chdir/ex01_returns.ipynb")
    assert grade.status == "ok" and grade.points == grade.max_points


def test_the_grader_cannot_be_killed_from_a_submission(run):
    grade = row(run, "kills_grader/ex01_returns.ipynb")
    assert grade.status == "tampered" and "sending signals" in grade.reason
    later = [g for g in run["grades"] if g.submission > grade.submission]
    assert later and all(g.status != "grader-error" for g in run["grades"])


def test_a_chatty_notebook_has_its_output_truncated(run):
    grade = row(run, "chatty/ex02_belief.ipynb")
    assert grade.status == "ok"
    assert len(grade.output) < 70_000 and "more bytes of output not kept" in grade.output


def test_submitted_files_are_never_modified(run):
    assert run["before"] == run["after"]


# ---------------------------------------------------------------------------------------------
# The gradebook


def test_about_forty_submissions_are_graded_with_two_jobs(run):
    assert len(run["grades"]) >= 40
    assert all(grade.status for grade in run["grades"])
    assert not [grade for grade in run["grades"] if grade.status == "grader-error"]


def test_the_gradebook_is_sorted_and_has_a_column_per_check(run):
    table = list(csv.DictReader(io.StringIO(run["csv"])))
    keys = [(r["student"], r["exercise"], r["submission"]) for r in table]
    assert keys == sorted(keys) and len(table) == len(run["grades"])
    assert {"discounted_returns", "discounted_returns (hidden)", "belief_update", "reinforce_gradient"} <= set(table[0])
    alice = next(r for r in table if r["submission"] == "submissions/alice/ex01_returns.ipynb")
    assert (alice["discounted_returns"], alice["discounted_returns (hidden)"], alice["points"]) == ("7", "2", "9")
    assert json.loads(run["json"])["rows"][0]["student"] == table[0]["student"]


def test_feedback_has_each_check_and_the_hint(run):
    text = run["feedback"]["bob.md"]
    assert "# Feedback for bob" in text and "| ex01_returns |" in text
    assert "**Hint:** looks like: reward-to-go off by one" in text
    assert "hidden: three steps" not in text  # hidden cases are not shown to students


def test_grading_twice_gives_the_same_gradebook_bytes(run):
    from seqrl.grading.feedback import csv_text, json_text

    some = [path for path in sorted(run["paths"][0].iterdir()) if path.name in ("alice", "bob", "syntax_error", "not_json")]
    first = run["grader"].grade(some, show_progress=False)
    again = run["grader"].grade(some, show_progress=False)
    assert csv_text(first) == csv_text(again) and json_text(first) == json_text(again)
    assert [(g.student, g.status, g.points) for g in first] == [
        (g.student, g.status, g.points) for g in run["grades"] if g.submission.split("/")[1] in ("alice", "bob", "not_json", "syntax_error")]


# ---------------------------------------------------------------------------------------------
# The pieces


def test_file_names_give_the_student_and_the_exercise_set():
    from seqrl.grading.submissions import split_name

    known = ["ex01_returns", "ex02_belief", "ex03_reinforce"]
    assert split_name("alice_ex01_returns", known) == ("alice", "ex01_returns")
    assert split_name("ex01_returns-bob", known) == ("bob", "ex01_returns")
    assert split_name("carol__whatever", known) == ("carol", "whatever")
    assert split_name("dave_ex2", known) == ("dave", "ex02_belief")
    assert split_name("ex01_returns", known) == (None, "ex01_returns")
    assert split_name("homework", known) == (None, None)


def test_outputs_cross_the_wire_as_plain_data_and_forgeries_are_refused():
    import numpy as np
    import torch

    from seqrl.grading.checks import compare
    from seqrl.grading.wire import WireError, decode, encode

    for value in (torch.tensor(1.5), torch.arange(6.0).reshape(2, 3).T, np.float32(2.0), (1, 2.5, None, "x"),
                  {"loss": torch.ones(2, dtype=torch.float64)}, float("nan")):
        assert compare(value, decode(encode(value))) is None
    assert type(decode(encode(iter([1])))).__name__ == "list_iterator"  # opaque: a name and a repr, no object
    assert encode(type("Liar", (float,), {})(1.0))["t"] == "opaque"  # a float subclass cannot lie about ==
    for forged in ({"t": "ndarray", "dtype": "O", "shape": [1], "data": ""}, {"t": "tensor", "dtype": "<f8",
                   "shape": [10**9], "data": "", "torch_dtype": "float64"}, {"t": "pickle", "v": "..."}, [1]):
        with pytest.raises(WireError):
            decode(forged)


# ---------------------------------------------------------------------------------------------
# The command line


def test_seqrl_grade_writes_the_gradebook_and_exits_zero_when_students_fail(tmp_path, capsys):
    from seqrl.cli import main

    folder = tmp_path / "in"
    for relative in ("bob/ex02_belief.ipynb", "empty/ex01_returns.ipynb"):
        (folder / relative).parent.mkdir(parents=True)
        shutil.copy(STORED / relative, folder / relative)
    out = tmp_path / "gradebook.csv"
    shutil.copytree(ROOT / "solutions", tmp_path / "solutions")
    status = main(["grade", str(folder), "--out", str(out), "--jobs", "2", "--timeout", "20",
                   "--feedback", str(tmp_path / "feedback"), "--solutions", str(tmp_path / "solutions")])
    printed = capsys.readouterr().out
    assert status == 0
    assert out.exists() and (tmp_path / "gradebook.json").exists() and (tmp_path / "feedback" / "bob.md").exists()
    assert "exercise" in printed and "invalid-notebook" in printed  # the summary table


def test_seqrl_grade_fails_on_a_missing_folder(tmp_path, capsys):
    from seqrl.cli import main

    assert main(["grade", str(tmp_path / "nowhere"), "--out", str(tmp_path / "g.csv")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_seqrl_check_shows_a_student_the_same_report(tmp_path, capsys):
    from seqrl.cli import main

    assert main(["check", str(STORED / "bob/ex01_returns.ipynb"), "--solutions", str(ROOT / "solutions")]) == 1
    printed = capsys.readouterr().out
    assert "Checking discounted_returns on 7 cases:" in printed
    assert "Hint: looks like: reward-to-go off by one (r_t left out)" in printed
    assert "score: " in printed and "/7 points" in printed
    assert main(["check", str(STORED / "alice/ex02_belief.ipynb"), "--solutions", str(ROOT / "solutions")]) == 0



@pytest.mark.parametrize("solution", sorted(p.name for p in (ROOT / "solutions").glob("ex*.ipynb")))
def test_every_reference_solution_gets_full_points_from_seqrl_check(solution, tmp_path, capsys):
    """Each exercise set in the book, handed in as its own solution, passes every graded check."""
    from seqrl.cli import main

    handed_in = tmp_path / "student" / solution
    handed_in.parent.mkdir()
    shutil.copy(ROOT / "solutions" / solution, handed_in)
    assert main(["check", str(handed_in), "--solutions", str(ROOT / "solutions")]) == 0, capsys.readouterr().out


if __name__ == "__main__":
    write_stored_fixtures()
    print(f"wrote {len(stored_fixtures())} notebooks to {STORED}")
