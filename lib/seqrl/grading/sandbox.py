"""Run a student's notebook cells in a separate, limited process and bring back their *outputs*.

The sandbox never computes a score. It runs the assembled cells (the canonical notebook with the
student's solution cells put in), and when a check cell calls ``check(name, fn)`` it calls ``fn`` on
the exercise's case inputs (sent by the grader) and streams each output, safely encoded
(:mod:`seqrl.grading.wire`), back to the grader, which compares them with the references in its own
process. A student who tampers with anything inside the sandbox (``check``, ``compare``, numpy, the
harness itself) can at most change what their own functions appear to return, which they control
anyway; the references and the hidden tests' expected outputs never enter the sandbox.

Layers, from the child's first instruction on:

* its own session (the grader kills the whole process group on a timeout), stdout/stderr into a
  pipe the grader truncates, a per-submission scratch folder as cwd, HOME and TMPDIR;
* rlimits: address space (``RLIMIT_AS``, on top of the preloaded libraries), CPU seconds, file
  size, no core dumps, processes (when not root), all with hard = soft so they cannot be raised;
* the functions that the exercises' references are built on (the library's, and the catalogue's
  reference helpers; the grader finds them by tracing each reference once) are replaced, in place
  (their ``__code__``), by stubs that raise "calling the library's reference implementation ... is
  not allowed in graded exercises";
* Landlock where the kernel has it (:mod:`seqrl.grading.landlock`): writes only in the scratch
  folder, no reading of other submissions, hidden tests or solutions, no ``execve``, no TCP, no
  signals out of the sandbox;
* a Python audit hook (:pep:`578`) that refuses, with a clear message, and reports: writes outside
  the scratch folder, reading protected paths, starting processes, signals, ``ctypes`` memory
  access, ``gc`` object hunting, tracing, sockets, raising rlimits, re-executing the masked modules.
  Audit hooks are not a security boundary on their own (``ctypes`` can get around them); Landlock is.

Messages go to the grader over a pipe, one JSON object per line, each carrying a nonce the grader
generated; lines without it are counted as forged.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import re
import secrets
import sys
import tempfile
import traceback
import types
from dataclasses import dataclass, field
from typing import Any

from . import wire

__all__ = ["Cell", "SandboxJob", "REFERENCE_MESSAGE", "REFERENCE_MARKER", "new_nonce", "scrub"]

REFERENCE_MESSAGE = "calling the library's reference implementation {name} is not allowed in graded exercises"
REFERENCE_MARKER = "is not allowed in graded exercises"
MAX_VIOLATIONS = 20
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_MISSING = object()


@dataclass
class Cell:
    """One code cell to run. ``kind``: ``solution`` (the student's), ``check``, or ``setup`` (canonical)."""

    index: int
    kind: str
    source: str
    label: str


@dataclass
class SandboxJob:
    """Everything the child needs, pickled by the (trusted) grader and read before any student code runs."""

    cells: list[Cell]
    public_cases: dict[str, list[bytes]]  # check name -> pickled (args, kwargs) per case
    hidden_cases: dict[str, list[bytes]] = field(default_factory=dict)
    protect: list[tuple[str, str]] = field(default_factory=list)  # (module, qualname) to mask
    scratch: str = ""
    unreadable: list[str] = field(default_factory=list)
    timeout: float = 60.0
    memory_mb: int | None = 2048
    nonce: str = ""
    isolate: bool = True  # Landlock + audit hook (off only for debugging the grader)


def new_nonce() -> str:
    return secrets.token_hex(16)


def scrub(text: str) -> str:
    """Memory addresses out (``0x7f3a...`` changes every run), one line."""
    return _ADDRESS.sub("0x…", str(text)).replace("\r", " ").replace("\n", " ")


# =============================================================================================
# The child


class _Harness:
    """The code that runs inside the sandbox, around the student's cells."""

    def __init__(self, job: SandboxJob, fd: int) -> None:
        self.job = job
        self._fd = fd
        self._nonce = job.nonce
        self._recorded: dict[str, Any] = {}
        self._kind = "setup"
        self._violations = 0
        self._memory = False
        self._dumps, self._write = json.dumps, os.write  # our own handles, whatever the student patches later

    # -- messages ------------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        data = (self._dumps({**message, "nonce": self._nonce}) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            try:
                written = self._write(self._fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # the grader is gone or stopped listening: nothing else to do
            view = view[written:]

    def violation(self, what: str, detail: str) -> None:
        self._violations += 1
        if self._violations <= MAX_VIOLATIONS:
            self.send({"t": "violation", "what": what, "detail": scrub(detail)[:300]})

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        job = self.job
        scratch = job.scratch
        home, tmp = os.path.join(scratch, "home"), os.path.join(scratch, "tmp")
        for folder in (home, tmp):
            os.makedirs(folder, exist_ok=True)
        os.environ.update(HOME=home, TMPDIR=tmp, TEMP=tmp, TMP=tmp, MPLBACKEND="Agg",
                          MPLCONFIGDIR=os.path.join(home, ".matplotlib"), OMP_NUM_THREADS="1",
                          SEQRL_GRADING="1")
        tempfile.tempdir = tmp
        os.chdir(scratch)
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass
        import warnings

        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        warnings.filterwarnings("ignore", message=".*FigureCanvasAgg.*")
        builtins.display = _display  # as in a notebook; prints what it is given
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        self._install_check()
        self._mask_references()
        self._builtins = dict(vars(builtins))
        self._stdout, self._stderr = sys.stdout, sys.stderr
        self._devnull = os.open(os.devnull, os.O_WRONLY)
        self._limits()
        abi = 0
        if job.isolate:
            from .landlock import restrict

            try:
                abi = restrict([scratch], job.unreadable)
            except OSError as error:
                self.send({"t": "note", "what": "landlock", "detail": str(error)})
        self.send({"t": "ready", "landlock": abi, "pid": os.getpid()})
        if job.isolate:
            sys.addaudithook(_audit_hook(self, scratch, job.unreadable, self._protected_files))

    def _install_check(self) -> None:
        import seqrl
        import seqrl.grading
        import seqrl.grading.checks as checks

        self._modules = {name: sys.modules[name] for name in ("builtins", "seqrl", "seqrl.grading", "seqrl.grading.checks")}
        self._seqrl, self._grading, self._checks = seqrl, seqrl.grading, checks
        self._recorder = self._record_check
        self._grading_attrs = {}
        self._restore()
        for module in (seqrl.grading, checks):  # snapshot after installing the recorder
            self._grading_attrs[module.__name__] = dict(vars(module))

    def _mask_references(self) -> None:
        """Replace the reference implementations' code by stubs that raise, in place."""
        import importlib
        import inspect

        self._protected_files: set[str] = set()
        targets: list[tuple[str, Any]] = []
        for module_name, qualname in self.job.protect:
            try:
                obj: Any = importlib.import_module(module_name)
                for part in qualname.split("."):
                    obj = getattr(obj, part)
                targets.append((f"{module_name}.{qualname}", obj))
            except Exception:  # noqa: BLE001 - a name that is not there cannot be called either
                continue
        for dotted, obj in targets:
            function = inspect.unwrap(obj) if callable(obj) else obj
            if not isinstance(function, types.FunctionType):
                continue
            module = sys.modules.get(function.__module__)
            if getattr(module, "__file__", None):
                self._protected_files.add(os.path.realpath(module.__file__))
            stub = _stub_code(dotted, function)
            try:
                function.__code__ = stub
                function.__defaults__ = function.__kwdefaults__ = None
            except ValueError:  # a closure: the code cannot be swapped; replace the module attribute
                if module is not None and getattr(module, function.__name__, None) is function:
                    setattr(module, function.__name__, types.FunctionType(stub, {"__builtins__": builtins}, function.__name__))

    def _limits(self) -> None:
        try:
            import resource
        except ImportError:  # pragma: no cover - not on Unix
            return

        def limit(which: int, value: int) -> None:
            try:
                soft, hard = resource.getrlimit(which)
                value = value if hard == resource.RLIM_INFINITY else min(value, hard)
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                pass

        job = self.job
        if job.memory_mb:
            limit(resource.RLIMIT_AS, _address_space() + job.memory_mb * 1024 * 1024)
        cpu = int(job.timeout) + 5
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))  # SIGXCPU, then SIGKILL
        except (ValueError, OSError):
            pass
        limit(resource.RLIMIT_FSIZE, 64 * 1024 * 1024)
        limit(resource.RLIMIT_CORE, 0)
        if hasattr(os, "getuid") and os.getuid() != 0:  # root ignores RLIMIT_NPROC
            limit(resource.RLIMIT_NPROC, _user_tasks() + 64)

    # -- running -------------------------------------------------------------------------------

    def _restore(self) -> None:
        """Put back what the canonical cells rely on, whatever the student's cells changed."""
        if hasattr(self, "_builtins"):
            table = vars(builtins)
            for key in [key for key in table if key not in self._builtins]:
                del table[key]
            table.update(self._builtins)
            sys.stdout, sys.stderr = self._stdout, self._stderr
        sys.modules.update(self._modules)
        self._seqrl.grading = self._grading
        self._grading.checks = self._checks
        self._grading.check = self._checks.check = self._recorder
        self.namespace["__builtins__"] = builtins
        self.namespace.pop("__loader__", None)

    def _patched(self) -> list[str]:
        """Names in ``seqrl.grading`` or ``seqrl.grading.checks`` that the student's cells replaced or
        deleted (a new name, such as a submodule just imported, is not counted)."""
        changed = []
        for module in (self._grading, self._checks):
            before, now = self._grading_attrs[module.__name__], vars(module)
            for key in sorted(before):
                if not key.startswith("__") and now.get(key, _MISSING) is not before[key]:
                    changed.append(f"{module.__name__}.{key}")
        return changed

    def run(self) -> None:
        cells = self.job.cells
        for cell in cells:
            if cell.kind != "solution":
                self._restore()
            self._kind = cell.kind
            error = self._exec(cell)
            self._kind = "between"
            try:
                os.chdir(self.job.scratch)
            except OSError:
                pass
            _close_figures()
            event: dict[str, Any] = {"t": "cell", "index": cell.index, "kind": cell.kind, "label": cell.label}
            if error is not None:
                event.update(error)
            self.send(event)
            if cell.kind == "solution":
                patched = self._patched()
                if patched:
                    self.send({"t": "note", "what": "patched", "detail": ", ".join(patched)})
        self._hidden()
        self.send({"t": "done"})

    def _exec(self, cell: Cell) -> dict | None:
        try:
            code = compile(cell.source, cell.label, "exec")
        except (SyntaxError, ValueError) as error:
            line = getattr(error, "lineno", None)
            where = f" (line {line})" if line else ""
            return {"error": f"{type(error).__name__}: {getattr(error, 'msg', error)}{where}", "error_type": type(error).__name__}
        try:
            exec(code, self.namespace)
        except BaseException as error:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
            return self._describe(error, cell.label)
        return None

    def _describe(self, error: BaseException, label: str | None = None) -> dict:
        memory = isinstance(error, MemoryError) or "can't allocate memory" in str(error)
        self._memory = self._memory or memory
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename.startswith("<student")]
        where = f" (in {frames[-1].name}, line {frames[-1].lineno})" if frames else ""
        if isinstance(error, SystemExit):
            text = f"SystemExit: the code called sys.exit({error.code!r})"
        else:
            text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return {"error": scrub(text)[:500] + where, "error_type": type(error).__name__, "memory": memory,
                "reference": REFERENCE_MARKER in str(error)}

    def _record_check(self, exercise: Any, fn: Any = None, *args: Any, **kwargs: Any) -> None:
        """Stands in for ``seqrl.grading.check`` in the sandbox: record ``fn``'s outputs, compare nothing."""
        name = exercise if isinstance(exercise, str) else getattr(exercise, "name", None)
        if self._kind != "check" or name not in self.job.public_cases:
            return None  # only the canonical check cells count
        self._recorded[name] = fn
        self._cases(name, fn, self.job.public_cases[name], hidden=False)
        print(f"{name}: ran on {len(self.job.public_cases[name])} cases; the grader compares the outputs")
        return None

    def _cases(self, name: str, fn: Any, cases: list[bytes], hidden: bool) -> None:
        for index, data in enumerate(cases):
            args, kwargs = pickle.loads(data)
            self._restore_builtins()
            try:
                if not callable(fn):
                    raise TypeError(f"check({name!r}, fn): fn must be a function, got {type(fn).__name__}")
                value = fn(*args, **kwargs)
                result: dict[str, Any] = {"value": wire.encode(value)}
            except BaseException as error:  # noqa: BLE001
                described = self._describe(error)
                result = {"raised": described["error_type"], "message": described["error"],
                          "memory": described["memory"], "reference": described["reference"]}
                if isinstance(error, NotImplementedError):
                    result["message"] = ""
            self.send({"t": "case", "check": name, "i": index, "hidden": hidden, **result})

    def _restore_builtins(self) -> None:
        table = vars(builtins)
        if table.get("isinstance") is not self._builtins["isinstance"] or table.get("callable") is not self._builtins["callable"]:
            table.update(self._builtins)

    def _hidden(self) -> None:
        """The hidden cases, after every cell ran, with the output silenced (it would show the inputs)."""
        todo = [(name, self._recorded[name]) for name in self.job.hidden_cases if name in self._recorded]
        if not todo:
            return
        try:
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001 - the student may have replaced sys.stdout
            pass
        os.dup2(self._devnull, 1)
        os.dup2(self._devnull, 2)
        self._kind = "hidden"
        for name, fn in todo:
            self._cases(name, fn, self.job.hidden_cases[name], hidden=True)


def _display(*objects: Any, **kwargs: Any) -> None:
    """``display`` as in a notebook, without one: print what is not a figure."""
    for obj in objects:
        if type(obj).__name__ != "Figure":
            print(obj)


def _close_figures() -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        try:
            pyplot.close("all")
        except Exception:  # noqa: BLE001
            pass


def _stub_code(dotted: str, function: types.FunctionType) -> types.CodeType:
    message = REFERENCE_MESSAGE.format(name=dotted)
    source = f"def {function.__name__}(*args, **kwargs):\n    raise RuntimeError({message!r})\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, "<seqrl grader: masked reference>", "exec"), {"__builtins__": builtins}, namespace)
    return namespace[function.__name__].__code__


def _address_space() -> int:
    """This process's current virtual memory size in bytes (the preloaded libraries)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _user_tasks() -> int:
    """How many threads this user runs now (RLIMIT_NPROC counts them all)."""
    uid, count = os.getuid(), 0
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        count += len(os.listdir(f"/proc/{entry.name}/task"))
                except OSError:
                    continue
    except OSError:
        return 1024
    return count


# -- the audit hook ----------------------------------------------------------------------------

_BLOCKED = {
    "os.system": "starting a shell", "subprocess.Popen": "starting a process", "os.posix_spawn": "starting a process",
    "os.exec": "starting a program", "os.spawn": "starting a process", "os.fork": "forking", "os.forkpty": "forking",
    "os.startfile": "starting a program", "pty.spawn": "starting a process",
    "os.killpg": "sending signals", "signal.pthread_kill": "sending signals",
    "ctypes.dlopen": "ctypes", "ctypes.dlsym": "ctypes", "ctypes.dlsym/handle": "ctypes", "ctypes.cdata": "ctypes",
    "ctypes.cdata/buffer": "ctypes", "ctypes.string_at": "ctypes", "ctypes.wstring_at": "ctypes",
    "gc.get_objects": "searching the interpreter's objects", "gc.get_referrers": "searching the interpreter's objects",
    "gc.get_referents": "searching the interpreter's objects", "sys._current_frames": "inspecting other frames",
    "sys.settrace": "tracing", "sys.setprofile": "tracing",
    "socket.__new__": "network access", "socket.connect": "network access", "socket.bind": "network access",
    "resource.setrlimit": "changing the resource limits", "resource.prlimit": "changing the resource limits",
}
_PATH_WRITES = {"os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.link", "os.truncate", "os.chmod", "os.chown",
                "os.utime", "os.chflags", "os.lchflags", "os.lchmod", "os.setxattr", "os.removexattr", "shutil.rmtree",
                "os.mkfifo", "os.mknod"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _Refused(RuntimeError):
    """Raised by the audit hook to refuse ``sys.addaudithook`` silently (CPython ignores RuntimeError there)."""


def _audit_hook(harness: _Harness, scratch: str, unreadable: list[str], protected_files: set[str]):
    scratch = os.path.realpath(scratch)
    denied = tuple(os.path.realpath(path) for path in unreadable)
    realpath, fspath, fsdecode, getpid, sep = os.path.realpath, os.fspath, os.fsdecode, os.getpid, os.sep

    def inside(path: str, folder: str) -> bool:
        return path == folder or path.startswith(folder + sep)

    def resolve(path: Any) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        try:
            return realpath(fsdecode(fspath(path)))
        except (TypeError, ValueError, OSError):
            return None

    def refuse(what: str, detail: str) -> None:
        harness.violation(what, detail)
        raise PermissionError(f"the grader does not allow {what} in graded exercises: {detail}")

    def check_write(path: Any) -> None:
        real = resolve(path)
        if real is not None and not inside(real, scratch) and real != os.devnull:
            refuse("writing outside the submission's scratch folder", real)

    def check_read(path: Any) -> None:
        if not denied:
            return
        real = resolve(path)
        if real is not None and not inside(real, scratch) and any(inside(real, folder) for folder in denied):
            refuse("reading the grader's protected files", real)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                writing = any(letter in mode for letter in "wax+")
            else:
                writing = bool((flags or 0) & _WRITE_FLAGS)
            if writing:
                check_write(path)
            else:
                check_read(path)
        elif event in _PATH_WRITES:
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    check_write(arg)
        elif event == "os.symlink":
            check_write(args[1])
        elif event in ("os.listdir", "os.scandir"):
            check_read(args[0] if args and args[0] is not None else ".")
        elif event == "os.kill":
            if args and args[0] != getpid():
                refuse("sending signals", f"os.kill(another process, signal {args[1] if len(args) > 1 else '?'})")
        elif event in _BLOCKED:
            refuse(_BLOCKED[event], event)
        elif event == "object.__setattr__":
            if len(args) > 1 and args[1] == "__code__":
                refuse("replacing a function's code", getattr(args[0], "__qualname__", "?"))
        elif event == "exec":
            filename = getattr(args[0], "co_filename", None) if args else None
            if filename and realpath(filename) in protected_files:
                refuse("re-executing a module the grader protects", filename)
        elif event == "sys.addaudithook":
            raise _Refused("no more audit hooks")

    return hook


def _blank_inherited_fds(keep: set[int]) -> None:
    """Point every other inherited descriptor (the fork server's socket and pipes) at /dev/null: the
    student can neither talk to the fork server nor write into them, and nothing holding a number breaks."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(number) for number in range(3, 256)]
    for name in names:
        number = int(name)
        if number not in keep and number != devnull:
            try:
                os.fstat(number)
                os.dup2(devnull, number)
            except OSError:
                continue
    os.close(devnull)


def _child_entry(job_bytes: bytes, results_fd: int, output_fd: int) -> None:
    """The sandboxed process, just forked from the fork server: run the job, never return."""
    code = 0
    try:
        os.setsid()  # its own process group: the grader kills the whole group on a timeout
    except OSError:
        pass
    try:
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        stream = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace",
                                  line_buffering=True)
        sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = stream
        _blank_inherited_fds(keep={0, 1, 2, results_fd})
        job = pickle.loads(job_bytes)
        del job_bytes
        harness = _Harness(job, results_fd)
        harness.setup()
        harness.run()
    except BaseException:  # noqa: BLE001 - a failure of the harness itself
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
        code = 70
    try:
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001
        pass
    os._exit(code)
