"""The instructor's auto-grader: ``seqrl grade`` over many submissions, ``seqrl check`` for one.

For each submitted notebook the grader

1. reads it (never writes it) and names it: student id and exercise set
   (:mod:`seqrl.grading.submissions`);
2. assembles the program: the canonical notebook from ``solutions/`` with the student's solution
   cells put in (:func:`~seqrl.grading.submissions.assemble`);
3. runs it in a sandboxed process with a time and a memory limit, which sends back the *outputs* of
   the student's functions on every case of every check, public and hidden
   (:mod:`seqrl.grading.sandbox`, started by :mod:`seqrl.grading.runner`);
4. scores those outputs here, in the grader's own process, with the real ``check``: the exercise's
   reference, ``compare`` and the wrong-answer hints never run where the student's code ran;
5. gives the submission a status and a reason (:data:`STATUSES`), and checks that nothing outside
   the sandbox's scratch folder changed (the submitted files, the hidden tests, the solutions).

Submissions run in parallel (``jobs``), each in its own process; one submission's failure costs only
its own points. The gradebook (:mod:`seqrl.grading.feedback`) is sorted and free of timestamps, so
grading the same inputs twice gives the same bytes.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import types
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .checks import CheckResult, Exercise, UnknownExerciseError, check, get_exercise
from .runner import SandboxRun, run_job
from .sandbox import REFERENCE_MARKER, SandboxJob, new_nonce, scrub
from .submissions import (
    ExerciseSet,
    InvalidNotebook,
    Submission,
    assemble,
    discover,
    exercise_set_of,
    load_exercise_set,
    read_notebook,
)
from .wire import WireError, decode

__all__ = [
    "STATUSES",
    "CheckScore",
    "Grade",
    "Grader",
    "GraderError",
    "HiddenTests",
    "load_hidden_tests",
]

STATUSES = {
    "ok": "every check passed",
    "partial": "some cases passed",
    "failed": "every check ran, no case passed",
    "error": "a check never ran (a cell raised before it, e.g. a syntax error)",
    "timeout": "stopped at the time limit",
    "memory": "ran out of memory (the memory limit)",
    "crashed": "the process ended before the checks finished (os._exit, a signal)",
    "tampered": "tried to interfere with the grader (blocked and reported), or files outside its scratch folder changed",
    "invalid-notebook": "not a readable notebook (empty, not JSON, no cells)",
    "unknown-exercise": "no exercise set could be identified",
    "grader-error": "the grader itself failed on this submission (a bug: please report it)",
}


class GraderError(Exception):
    """A problem with the grader's inputs (arguments, hidden tests, solutions): exit status 2."""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class CheckScore:
    """One check's outcome in the gradebook: its column, points and report lines."""

    column: str
    check: str
    hidden: bool
    points: float
    max_points: float
    passed: int
    total: int
    ran: int
    lines: list[str]
    hints: list[str]
    diagnosis: list[str]
    reference_called: bool = False
    not_implemented: bool = False

    def summary(self) -> str:
        text = f"{self.column}: {self.passed}/{self.total} cases"
        if self.ran == 0:
            text += " (never ran)"
        elif self.not_implemented:
            text += " (not implemented)"
        elif self.diagnosis and not self.hidden:
            text += f" (looks like: {'; '.join(self.diagnosis)})"
        elif self.passed < self.total and not self.hidden:
            failure = next((line for line in self.lines if line.startswith("✗") and ": raised " in line), "")
            if failure:
                text += f" (first failure: {failure.split(': raised ', 1)[1][:150]})"
        if self.reference_called:
            text += " (called the library's reference implementation: no points for those cases)"
        return text


@dataclass
class Grade:
    """One gradebook row."""

    student: str
    exercise: str
    submission: str
    status: str
    reason: str
    points: float = 0.0
    max_points: float = 0.0
    checks: list[CheckScore] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    output: str = ""

    def to_dict(self, *, output: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not output:
            data.pop("output")
        return data


# ---------------------------------------------------------------------------------------------
# Hidden tests


@dataclass
class HiddenTests:
    """Instructor-only cases: ``exercises[check_name]`` adds cases to the function passed to that check."""

    exercises: dict[str, Exercise] = field(default_factory=dict)
    protect: list[str] = field(default_factory=list)
    folder: Path | None = None


def load_hidden_tests(folder: Path) -> HiddenTests:
    """Read every ``*.py`` in ``folder``: ``HIDDEN = {check_name: factory or Exercise}``, optional ``PROTECT``.

    The files are compiled from their text (no ``__pycache__`` is written into the folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GraderError(f"--hidden-tests: no such folder: {folder}")
    hidden = HiddenTests(folder=folder)
    for path in sorted(folder.glob("*.py")):
        name = f"seqrl_hidden_tests.{path.stem}"
        module = types.ModuleType(name)
        module.__file__ = str(path)
        try:
            code = compile(path.read_bytes(), str(path), "exec")
            sys.modules[name] = module
            exec(code, module.__dict__)
        except Exception as error:
            raise GraderError(f"hidden tests {path}: {type(error).__name__}: {error}") from error
        for check_name, factory in dict(getattr(module, "HIDDEN", {})).items():
            try:
                exercise = factory if isinstance(factory, Exercise) else factory()
            except Exception as error:
                raise GraderError(f"hidden tests {path}: building {check_name!r} raised {type(error).__name__}: {error}") from error
            if not isinstance(exercise, Exercise):
                raise GraderError(f"hidden tests {path}: HIDDEN[{check_name!r}] must build an Exercise, got {type(exercise).__name__}")
            if check_name in hidden.exercises:
                raise GraderError(f"hidden tests {path}: {check_name!r} is defined twice")
            hidden.exercises[check_name] = exercise
        protect = getattr(module, "PROTECT", [])
        if not isinstance(protect, (list, tuple)) or not all(isinstance(item, str) for item in protect):
            raise GraderError(f"hidden tests {path}: PROTECT must be a list of dotted names like 'seqrl.rl.gae'")
        hidden.protect.extend(protect)
    return hidden


def _resolve(dotted: str) -> tuple[str, str]:
    """``"seqrl.rl.gae"`` -> ``("seqrl.rl.advantages", "gae")``: where the function is defined."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            break
        obj = getattr(obj, "__wrapped__", obj)
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
            return module, qualname
        break
    raise GraderError(f"PROTECT: {dotted!r} is not a function that can be imported")


def _is_library(module: str) -> bool:
    return module == "seqrl" or module.startswith("seqrl.") and not module.startswith("seqrl.grading")


def _library_calls(exercise: Exercise) -> set[tuple[str, str]]:
    """The functions an exercise's reference is built on: what the sandbox masks.

    Two kinds, found by running the reference once under a profiler: module-level functions of the
    catalogue that the reference reaches (``_returns_reference``), and library functions called from
    outside the library (``seqrl.rl.discounted_returns``, not the helpers it calls in turn). Classes,
    methods and closures are never masked.
    """
    found: set[tuple[str, str]] = set()

    def profiler(frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        qualname = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
        if not isinstance(module, str) or "." in qualname or qualname.startswith(("<", "__")):
            return  # methods, closures, module bodies, dataclasses' generated __create_fn__
        if module.startswith("seqrl.grading.catalog."):
            found.add((module, qualname))
        elif _is_library(module):
            caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back is not None else ""
            if not (isinstance(caller, str) and _is_library(caller)):
                found.add((module, qualname))

    case = exercise.cases[0]
    try:  # once untraced, so that the imports it triggers are done
        exercise.reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
    except Exception:  # noqa: BLE001
        pass
    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        exercise.reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
    except Exception:  # noqa: BLE001 - a failing reference protects what it reached
        pass
    finally:
        sys.setprofile(previous)
    return found


# ---------------------------------------------------------------------------------------------
# Watching the files the sandbox must not change


class Watch:
    """What the files under some paths look like (size, mtime, inode); :meth:`changes` lists what
    changed since the last call. Cheap enough to run after every submission."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = sorted({Path(path).resolve() for path in paths if path is not None})
        self._base = self._snapshot()

    def _snapshot(self) -> dict[str, tuple]:
        state: dict[str, tuple] = {}
        for root in self._paths:
            if not root.exists():
                continue
            files = [root] if not root.is_dir() else [Path(folder) / name for folder, _, names in os.walk(root)
                                                      for name in names]
            for file in files:
                try:
                    stat = file.lstat()
                except OSError:
                    continue
                state[str(file)] = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_mode)
        return state

    def changes(self) -> list[str]:
        now = self._snapshot()
        found = [f"changed: {path}" for path in sorted(set(now) & set(self._base)) if now[path] != self._base[path]]
        found += [f"created: {path}" for path in sorted(set(now) - set(self._base))]
        found += [f"deleted: {path}" for path in sorted(set(self._base) - set(now))]
        self._base = now
        return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _holds_the_library(folder: Path) -> bool:
    """True if ``folder`` contains Python itself, the virtual environment or this package (the
    sandbox must keep reading those, so such a folder is never made unreadable as a whole)."""
    import seqrl

    folder = folder.resolve()
    needed = [Path(sys.prefix), Path(sys.base_prefix), Path(seqrl.__file__).parent,
              *(Path(entry) for entry in sys.path if entry and Path(entry).is_dir())]
    return any(path.resolve() == folder or folder in path.resolve().parents for path in needed)


# ---------------------------------------------------------------------------------------------
# Replaying recorded outputs through the real check


_EXCEPTION_TYPES: dict[str, type] = {}


def _exception(name: Any, message: str) -> BaseException:
    """An exception that ``check`` reports as "raised NAME: message" (NAME is the student's type)."""
    name = name if isinstance(name, str) and name.isidentifier() else "Exception"
    if name == "NotImplementedError":
        return NotImplementedError(message)
    if name not in _EXCEPTION_TYPES:
        _EXCEPTION_TYPES[name] = type(name, (Exception,), {"__module__": "builtins"})
    return _EXCEPTION_TYPES[name](message)


class _Replay:
    """Stands in for the student's function in the grader: returns what it returned in the sandbox."""

    def __init__(self, outputs: dict[int, dict], missing: str, malformed: list[str]) -> None:
        self.outputs, self.missing, self.malformed, self.calls = outputs, missing, malformed, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        index, self.calls = self.calls, self.calls + 1
        item = self.outputs.get(index)
        if item is None:
            raise _exception("NotRun", self.missing)
        if "value" in item:
            try:
                return decode(item["value"])
            except (WireError, ValueError, TypeError) as error:
                self.malformed.append(str(error))
                raise _exception("MalformedOutput", "the output could not be read back from the sandbox") from None
        message = item.get("message") if isinstance(item.get("message"), str) else ""
        return_type = item.get("raised")
        raise _exception(return_type, scrub(message).removeprefix(f"{return_type}: "))


# ---------------------------------------------------------------------------------------------
# The grader


def _fmt(points: float) -> str:
    return f"{points:g}"


@dataclass
class _Messages:
    """The sandbox's messages, sorted: outputs per (check, hidden) and case, cell errors, tampering."""

    outputs: dict[tuple[str, bool], dict[int, dict]] = field(default_factory=dict)
    cell_errors: list[str] = field(default_factory=list)
    tampering: list[str] = field(default_factory=list)
    memory: bool = False
    landlock: Any = None

    @classmethod
    def read(cls, run: SandboxRun, changed: list[str]) -> _Messages:
        seen = cls()
        for message in run.messages:
            kind = message.get("t")
            if kind == "case":
                name, index, hidden = message.get("check"), message.get("i"), message.get("hidden")
                if isinstance(name, str) and isinstance(index, int) and isinstance(hidden, bool):
                    seen.outputs.setdefault((name, hidden), {})[index] = message
                    seen.memory = seen.memory or message.get("memory") is True
            elif kind == "cell" and isinstance(message.get("error"), str):
                seen.memory = seen.memory or message.get("memory") is True
                where = "your solution cell" if message.get("kind") == "solution" else "notebook cell"
                label = str(message.get("label", "")).strip("<>")
                label = label.removeprefix("student cell: ").removeprefix("notebook cell ")
                seen.cell_errors.append(f"{where} {label} raised {scrub(message['error'])}")
            elif kind == "violation":
                seen.tampering.append(f"tried {message.get('what')}: {message.get('detail')} (blocked)")
            elif kind == "note" and message.get("what") == "patched":
                seen.tampering.append(f"replaced {message.get('detail')} (no effect on the grade)")
            elif kind == "ready":
                seen.landlock = message.get("landlock")
        if run.forged:
            seen.tampering.append(f"{run.forged} message(s) on the result channel did not come from the grader's harness")
        if run.overflow:
            seen.tampering.append("sent more than the grader accepts on the result channel")
        seen.tampering.extend(f"files outside the scratch folder changed: {change}" for change in changed)
        return seen


def _crash_reason(run: SandboxRun) -> str:
    if not run.started:
        lines = run.output.strip().splitlines()
        return "the sandbox did not start" + (f": {scrub(lines[-1])[:200]}" if lines else "")
    if run.exitcode is None:
        return "the notebook's process ended without an exit status (the grader's fork server stopped?)"
    if run.exitcode < 0:
        try:
            name = signal.Signals(-run.exitcode).name
        except ValueError:
            name = f"signal {-run.exitcode}"
        hint = " (the system ran out of memory?)" if -run.exitcode == signal.SIGKILL else ""
        return f"the notebook's process was killed by {name}{hint}"
    return f"the notebook's process exited with code {run.exitcode} before the checks finished (os._exit?)"


class Grader:
    """Grades notebooks against the canonical notebooks in ``solutions``.

    Args:
        solutions: folder of canonical notebooks (``solutions/``; a generated ``exercises/`` works too).
        hidden: instructor-only tests (:func:`load_hidden_tests`), or None.
        timeout: wall-clock seconds per submission (student code only; start-up is not counted).
        memory_mb: memory a submission may allocate on top of the preloaded libraries (RLIMIT_AS).
        jobs: submissions graded at the same time.
        isolate: Landlock and the audit hook (turn off only to debug the grader).
        watch: extra files or folders that must not change while grading (the repository, say).
        unreadable: more paths the sandbox may not read (the submissions, the hidden tests, the
            solutions and the other submissions' scratch folders always are).
        verbose: print each check's report as the notebook would (``seqrl check``).
        protect_files: make those paths unreadable (off for ``seqrl check``: nothing there is secret).
    """

    def __init__(self, solutions: Path, *, hidden: HiddenTests | None = None, timeout: float = 60.0,
                 memory_mb: int | None = 2048, jobs: int = 1, isolate: bool = True, watch: list[Path] = (),
                 unreadable: list[Path] = (), verbose: bool = False, protect_files: bool = True) -> None:
        self.solutions = Path(solutions)
        if not self.solutions.is_dir():
            raise GraderError(f"no solutions folder at {self.solutions}")
        if timeout <= 0:
            raise GraderError(f"--timeout must be positive, got {timeout:g}")
        if memory_mb is not None and memory_mb < 64:
            raise GraderError(f"--memory-mb must be at least 64, got {memory_mb}")
        if jobs < 1:
            raise GraderError(f"--jobs must be at least 1, got {jobs}")
        self.hidden = hidden or HiddenTests()
        self.timeout, self.memory_mb, self.jobs, self.isolate = timeout, memory_mb, jobs, isolate
        self.watch, self.unreadable, self.verbose = list(watch), list(unreadable), verbose
        self.protect_files = protect_files
        self._lock = threading.RLock()
        self._sets: dict[str, ExerciseSet] = {}
        self._broken: dict[str, str] = {}  # exercise set -> why its canonical notebook cannot be used
        for path in sorted(self.solutions.glob("*.ipynb")):
            try:
                exercise_set = load_exercise_set(path)
            except (OSError, InvalidNotebook) as error:
                self._broken[path.stem] = f"the canonical notebook {path} cannot be read: {error}"
                continue
            self._sets[exercise_set.name] = exercise_set
            if path.stem != exercise_set.name:
                self._sets.setdefault(path.stem, exercise_set)
        every_check = {name for exercise_set in self._sets.values() for name in exercise_set.checks}
        for name in self.hidden.exercises:
            if name not in every_check:
                raise GraderError(f"hidden tests for {name!r}, which no notebook in {self.solutions} checks "
                                  f"(checks: {', '.join(sorted(every_check)) or 'none'})")
        self._extra_protect = [_resolve(dotted) for dotted in self.hidden.protect]
        self._prepared: dict[str, tuple[dict, dict, list]] = {}

    @property
    def exercise_sets(self) -> list[str]:
        return sorted({exercise_set.name for exercise_set in self._sets.values()} | set(self._broken))

    # -- per exercise set, once ------------------------------------------------------------------

    def _prepare(self, exercise_set: ExerciseSet) -> tuple[dict, dict, list]:
        """Pickled case inputs (public, hidden) and the functions to mask, for one exercise set."""
        with self._lock:
            if exercise_set.name not in self._prepared:
                public, hidden, protect = {}, {}, set(self._extra_protect)
                for name in exercise_set.checks:
                    try:
                        exercise = get_exercise(name)
                    except UnknownExerciseError as error:
                        raise GraderError(f"{exercise_set.path}: {error}") from None
                    public[name] = [pickle.dumps((case.args, case.kwargs)) for case in exercise.cases]
                    protect |= _library_calls(exercise)
                    if name in self.hidden.exercises:
                        extra = self.hidden.exercises[name]
                        hidden[name] = [pickle.dumps((case.args, case.kwargs)) for case in extra.cases]
                        protect |= _library_calls(extra)
                self._prepared[exercise_set.name] = (public, hidden, sorted(protect))
            return self._prepared[exercise_set.name]

    # -- many submissions ------------------------------------------------------------------------

    def grade(self, paths: list[Path], *, show_progress: bool = True) -> list[Grade]:
        """Grade every notebook under ``paths``; the grades sorted by student, exercise, submission."""
        for path in paths:
            if not Path(path).exists():
                raise GraderError(f"no such file or folder: {path}")
        try:
            submissions = discover([Path(path) for path in paths], self.exercise_sets)
        except (OSError, ValueError) as error:
            raise GraderError(str(error)) from None
        scratch = Path(tempfile.mkdtemp(prefix="seqrl-grade-"))
        protected = [Path(path) for path in paths] + [self.solutions]
        if self.hidden.folder is not None:
            protected.append(self.hidden.folder)
        watch = Watch(protected + self.watch)
        digests = {submission.origin: _sha256(submission.origin) for submission in submissions}
        unreadable: list[Path] = []
        if self.protect_files:
            for path in [*protected, *self.unreadable]:
                if Path(path).is_dir() and _holds_the_library(Path(path)):  # e.g. `seqrl grade .` in the repository
                    unreadable += [s.origin for s in submissions if Path(path).resolve() in s.origin.resolve().parents]
                else:
                    unreadable.append(Path(path))
            unreadable.append(scratch)  # the other submissions' scratch folders (its own stays allowed)
        grades: list[Grade] = []
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="seqrl-grade")
        try:
            futures = [pool.submit(self._grade_safely, submission, scratch / f"job{index}", unreadable, watch)
                       for index, submission in enumerate(submissions)]
            iterator = as_completed(futures)
            if show_progress:
                from seqrl.utils import progress

                iterator = progress(iterator, desc="grading", total=len(futures), unit="notebook")
            for future in iterator:
                grades.append(future.result())
        except BaseException:  # Ctrl-C: stop every sandbox now rather than at its time limit
            pool.shutdown(wait=False, cancel_futures=True)
            from .runner import shutdown

            shutdown()
            raise
        finally:
            pool.shutdown(wait=True)
            shutil.rmtree(scratch, ignore_errors=True)
        changed = [str(origin) for origin, digest in digests.items() if not origin.exists() or _sha256(origin) != digest]
        if changed:  # the per-submission checks should have caught this first
            print(f"warning: submitted files changed while grading: {', '.join(changed)}", file=sys.stderr)
        return sorted(grades, key=lambda grade: (grade.student, grade.exercise, grade.submission))

    def _grade_safely(self, submission: Submission, scratch: Path, unreadable: list[Path], watch: Watch | None) -> Grade:
        try:
            return self.grade_submission(submission, scratch, unreadable, watch)
        except GraderError as error:
            return Grade(submission.student, submission.name_set or "", submission.label, "grader-error", str(error))
        except Exception as error:  # noqa: BLE001 - one submission's failure must not stop the others
            return Grade(submission.student, submission.name_set or "", submission.label, "grader-error",
                         f"{type(error).__name__}: {scrub(str(error))}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- one submission --------------------------------------------------------------------------

    def grade_submission(self, submission: Submission, scratch: Path, unreadable: list[Path] = (),
                         watch: Watch | None = None) -> Grade:
        """Grade one submission, running it in ``scratch`` (created here)."""
        row = Grade(submission.student, submission.name_set or "", submission.label, "", "")
        try:
            notebook = read_notebook(submission.data)
        except InvalidNotebook as error:
            row.status, row.reason = "invalid-notebook", str(error)
            return row
        named = exercise_set_of(notebook)
        name = named or submission.name_set
        row.exercise = name or ""
        if name in self._broken:
            raise GraderError(self._broken[name])
        exercise_set = self._sets.get(name) if name else None
        if exercise_set is None:
            row.status = "unknown-exercise"
            if name:
                row.reason = (f"no exercise set named {name!r} (known: {', '.join(self.exercise_sets)})"
                              + (" (from the notebook's metadata)" if named else ""))
            else:
                row.reason = ("cannot tell which exercise this is: no seqrl.exercise_set in the notebook's metadata "
                              f"and no exercise set ({', '.join(self.exercise_sets)}) in the file name")
            return row
        row.exercise = exercise_set.name
        public, hidden, protect = self._prepare(exercise_set)
        cells, notes = assemble(exercise_set, notebook)
        scratch.mkdir(parents=True, exist_ok=True)
        job = SandboxJob(cells=cells, public_cases=public, hidden_cases=hidden, protect=protect, scratch=str(scratch),
                         unreadable=[str(path) for path in unreadable], timeout=self.timeout, memory_mb=self.memory_mb,
                         nonce=new_nonce(), isolate=self.isolate)
        run = run_job(job)
        changed: list[str] = []
        if watch is not None:
            with self._lock:
                changed = watch.changes()
        with self._lock:
            return self._score(row, exercise_set, run, notes, changed, scratch)

    def _score(self, row: Grade, exercise_set: ExerciseSet, run: SandboxRun, notes: list[str], changed: list[str],
               scratch: Path) -> Grade:
        """Fill ``row`` from what the sandbox sent: each check scored here, then the status and reason."""
        seen = _Messages.read(run, changed)
        timed_out = run.timed_out or run.exitcode == -signal.SIGXCPU
        if timed_out:
            missing = f"did not finish within the time limit ({_fmt(self.timeout)} s)"
        elif seen.memory:
            missing = "not reached: the notebook ran out of memory before"
        elif not run.done:
            missing = "not reached: the notebook's process ended before"
        else:
            missing = "the check cell did not run this check (a cell before it failed?)"
        malformed: list[str] = []
        for name in exercise_set.checks:
            row.checks.append(self._check(name, get_exercise(name), seen.outputs.get((name, False), {}), missing,
                                          malformed, hidden=False))
            if name in self.hidden.exercises:
                row.checks.append(self._check(name, self.hidden.exercises[name], seen.outputs.get((name, True), {}),
                                              missing, malformed, hidden=True))
        if malformed:
            seen.tampering.append("outputs that the sandbox's encoder cannot have produced")
        row.points = sum(score.points for score in row.checks)
        row.max_points = sum(score.max_points for score in row.checks)
        row.output = run.output.replace(str(scratch), "<scratch>")
        problems = [*notes, *seen.cell_errors, *seen.tampering]
        row.problems = [self._anonymise(problem, scratch) for problem in dict.fromkeys(problems)]
        if seen.landlock == 0 and self.isolate and sys.platform.startswith("linux"):
            row.problems.append("note: this kernel has no Landlock; file access was limited by the audit hook only")
        tampering = [self._anonymise(problem, scratch) for problem in dict.fromkeys(seen.tampering)]
        row.status, lead = self._status(row, run, timed_out, seen.memory, tampering)
        summary = "; ".join(score.summary() for score in row.checks)
        row.reason = scrub("; ".join(part for part in (lead, summary) if part))[:1000]
        return row

    def _status(self, row: Grade, run: SandboxRun, timed_out: bool, memory: bool, tampering: list[str]) -> tuple[str, str]:
        """The row's status and the reason's first part, in order of precedence."""
        first_error = next((problem for problem in row.problems if " raised " in problem), "")
        never_ran = [score.check for score in row.checks if not score.hidden and score.ran == 0]
        if tampering:
            return "tampered", "; ".join(tampering)
        if timed_out:
            return "timeout", f"stopped at the time limit of {_fmt(self.timeout)} s"
        if memory:
            error = next((p for p in row.problems if "Memory" in p or "allocate memory" in p), first_error)
            return "memory", f"ran out of memory (limit {self.memory_mb} MB)" + (f": {error}" if error else "")
        if not run.done:
            return "crashed", _crash_reason(run)
        if never_ran:
            return "error", f"{', '.join(never_ran)} never ran" + (f": {first_error}" if first_error else "")
        if row.points >= row.max_points:
            return "ok", "all checks passed"
        return ("partial" if row.points > 0 else "failed"), ""

    @staticmethod
    def _anonymise(text: str, scratch: Path) -> str:
        """This run's temporary folders out of a message (so that a re-run writes the same gradebook)."""
        return str(text).replace(str(scratch), "<scratch>").replace(str(scratch.parent), "<scratch folders>")

    def _check(self, name: str, exercise: Exercise, outputs: dict[int, dict], missing: str, malformed: list[str],
               *, hidden: bool) -> CheckScore:
        replay = _Replay(outputs, missing, malformed)
        result: CheckResult = check(exercise, replay, raise_on_failure=False, verbose=self.verbose and not hidden)
        lines = [("✓ " if case.passed else "✗ ") + line for case, line in zip(result.cases, result.messages)]
        return CheckScore(
            column=f"{name} (hidden)" if hidden else name,
            check=name,
            hidden=hidden,
            points=result.points,
            max_points=result.max_points,
            passed=result.passed,
            total=result.total,
            ran=len([index for index in outputs if 0 <= index < result.total]),
            lines=[scrub(line) for line in lines],
            hints=list(result.hints),
            diagnosis=list(result.diagnosis),
            reference_called=any(REFERENCE_MARKER in case.message for case in result.cases),
            not_implemented=bool(result.cases) and all(case.message == "not implemented yet" for case in result.cases),
        )
