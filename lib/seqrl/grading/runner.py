"""Running sandbox jobs: the grader's fork server and the parent's side of the pipes.

The fork server is a separate Python process that imports torch, numpy, matplotlib and the library
once (:mod:`seqrl.grading._preload`) and then forks one child per submission, which runs
:func:`seqrl.grading.sandbox._child_entry`. Forking a warm process takes milliseconds where a fresh
interpreter would spend seconds importing torch. The server never runs student code and never
unpickles anything itself: it passes the job's bytes and three pipe ends to the child and reports the
child's pid and exit status. It stops when the grader closes its socket (or exits), killing any child
still running.

:func:`run_job` reads the child's two pipes (messages, output) until it exits or its time is up: the
output is truncated, messages without the job's nonce are counted as forged, and the whole process
group is killed at the time limit.
"""
from __future__ import annotations

import atexit
import json
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from .sandbox import SandboxJob, _child_entry

__all__ = ["SandboxRun", "run_job", "shutdown"]

OUTPUT_LIMIT = 64 * 1024  # bytes of the notebook's stdout/stderr kept
RESULT_LIMIT = 64 * 1024 * 1024  # bytes of messages accepted from one submission
STARTUP_LIMIT = 300.0  # seconds for the fork server to start (it imports torch once)


@dataclass
class SandboxRun:
    """What came back: the trusted messages, the truncated output, and how the process ended."""

    messages: list[dict]
    output: str
    exitcode: int | None
    timed_out: bool = False
    started: bool = False
    forged: int = 0
    overflow: bool = False
    wall: float = 0.0

    @property
    def done(self) -> bool:
        return any(message.get("t") == "done" for message in self.messages)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One request: an 8-byte length with three descriptors attached, then the job's bytes."""
    header, fds, _, _ = socket.recv_fds(sock, 8, 3)
    if not header:
        return None
    while len(header) < 8:
        more = sock.recv(8 - len(header))
        if not more:
            return None
        header += more
    (length,) = struct.unpack("!Q", header)
    chunks, remaining = [], length
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks), list(fds)


def _serve(fd: int) -> None:
    """The fork server's main loop (``python -c``): fork a child per request, report its pid and exit status.

    It only passes the job's bytes on (the child unpickles them); it never runs student code itself.
    """
    import select

    import seqrl.grading._preload  # noqa: F401  - torch, numpy, matplotlib, the library: once

    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *args: None)  # a handler, so that the wake-up pipe is written
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the grader, which then closes the socket
    children: dict[int, int] = {}  # pid -> the descriptor its exit status goes to

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            status_fd = children.pop(pid, None)
            if status_fd is not None:
                try:
                    os.write(status_fd, struct.pack("!i", os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass
                os.close(status_fd)

    try:
        while True:
            try:
                ready, _, _ = select.select([sock, wake_r], [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                os.read(wake_r, 4096)
                reap()
            if sock not in ready:
                continue
            request = _receive(sock)
            if request is None:
                break  # the grader is gone
            job_bytes, fds = request
            if len(fds) != 3:
                for extra in fds:
                    os.close(extra)
                continue
            results_fd, output_fd, status_fd = fds
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                sock.close()
                for other in (wake_r, wake_w, status_fd, *children.values()):
                    os.close(other)
                _child_entry(job_bytes, results_fd, output_fd)
            os.close(results_fd)
            os.close(output_fd)
            os.write(status_fd, struct.pack("!i", pid))
            children[pid] = status_fd
            reap()
    finally:
        for pid in list(children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


class _ForkServer:
    """The grader's handle on its fork server (one per grader process, started on first use)."""

    def __init__(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
        code = "import sys; from seqrl.grading.runner import _serve; _serve(int(sys.argv[1]))"
        self.process = subprocess.Popen([sys.executable, "-c", code, str(child.fileno())], pass_fds=(child.fileno(),),
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        child.close()
        self.sock = parent
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def spawn(self, job_bytes: bytes, fds: list[int]) -> None:
        with self.lock:
            socket.send_fds(self.sock, [struct.pack("!Q", len(job_bytes))], fds)
            self.sock.sendall(job_bytes)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


_SERVER: _ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def _server() -> _ForkServer:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive():
            if _SERVER is None:
                atexit.register(shutdown)
            _SERVER = _ForkServer()
        return _SERVER


def shutdown() -> None:
    """Stop the fork server (it also stops by itself when this process exits)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None:
            _SERVER.close()
            _SERVER = None


def _kill(pid: int | None) -> None:
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def run_job(job: SandboxJob) -> SandboxRun:
    """Run ``job`` in a fresh sandboxed process; block until it finishes or its time is up.

    The time limit starts when the sandbox is ready (the fork server's first start is not counted).
    """
    results_r, results_w = os.pipe()
    output_r, output_w = os.pipe()
    status_r, status_w = os.pipe()
    begin = time.monotonic()
    try:
        _server().spawn(pickle.dumps(job), [results_w, output_w, status_w])
    finally:
        for fd in (results_w, output_w, status_w):
            os.close(fd)
    run = SandboxRun(messages=[], output="", exitcode=None)
    selector = selectors.DefaultSelector()
    for fd, name in ((results_r, "results"), (output_r, "output"), (status_r, "status")):
        selector.register(fd, selectors.EVENT_READ, name)
    status = b""
    pid: int | None = None
    pending = b""
    output = bytearray()
    dropped = received = 0
    ready_at: float | None = None
    exited_at: float | None = None
    killed_at: float | None = None
    open_pipes = 3
    try:
        while open_pipes:
            now = time.monotonic()
            if exited_at is not None and now - exited_at > 1.0:
                break  # something else holds the pipes open: stop listening
            if killed_at is not None and now - killed_at > 10.0:
                break  # killed, yet no exit status: give up on it
            deadline = (ready_at + job.timeout) if ready_at is not None else begin + STARTUP_LIMIT
            if now >= deadline and killed_at is None and exited_at is None:
                run.timed_out = ready_at is not None
                _kill(pid)
                killed_at = now
            wait = 0.5 if killed_at is not None or exited_at is not None else min(deadline - now, 0.5)
            for key, _ in selector.select(timeout=max(0.01, wait)):
                try:
                    chunk = os.read(key.fileobj, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
                    if key.data == "status":
                        exited_at = time.monotonic()
                    continue
                if key.data == "status":
                    status += chunk
                    if len(status) >= 4 and pid is None:
                        (pid,) = struct.unpack("!i", status[:4])
                    if len(status) >= 8:
                        (run.exitcode,) = struct.unpack("!i", status[4:8])
                elif key.data == "output":
                    keep = max(0, OUTPUT_LIMIT - len(output))
                    output += chunk[:keep]
                    dropped += len(chunk) - min(len(chunk), keep)
                else:
                    received += len(chunk)
                    if received > RESULT_LIMIT:
                        if not run.overflow:
                            run.overflow = True
                            _kill(pid)
                            killed_at = killed_at or time.monotonic()
                        continue
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        message = _parse(line, job.nonce)
                        if message is None:
                            run.forged += 1
                            continue
                        if message.get("t") == "ready" and ready_at is None:
                            ready_at = time.monotonic()
                            run.started = True
                        run.messages.append(message)
    finally:
        selector.close()
        if exited_at is None:
            _kill(pid)
        for fd in (results_r, output_r, status_r):
            os.close(fd)
    if pending.strip() and not run.overflow:
        message = _parse(pending, job.nonce)
        if message is None:
            run.forged += 1
        else:
            run.messages.append(message)
    run.output = output.decode("utf-8", errors="replace")
    if dropped:
        run.output += f"\n[... {dropped} more bytes of output not kept]"
    run.wall = time.monotonic() - begin
    return run


def _parse(line: bytes, nonce: str) -> dict | None:
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("nonce") != nonce or not isinstance(message.get("t"), str):
        return None
    return message
