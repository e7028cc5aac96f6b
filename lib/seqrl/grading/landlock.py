"""Linux Landlock, through ``ctypes``: let a process write only in its scratch folder.

Landlock (Linux 5.13+) lets an unprivileged process give up file-system rights for itself and its
future children; the kernel enforces them, so neither ``ctypes`` nor a C extension can get around
them. :func:`restrict` keeps:

* writing (create, write, truncate, delete, rename, link) only beneath ``writable`` folders
  (and writing to ``/dev/null``-like devices beneath ``/dev``);
* reading everywhere except beneath the ``unreadable`` paths (other students' notebooks, the
  instructor's hidden tests, the solutions): Landlock only knows *allow* rules, so every sibling of
  the folders on the way from ``/`` to an unreadable path is allowed one by one;
* no ``execve`` at all (no shell, no other programs);
* with ABI 4+, no TCP ``connect``/``bind``; with ABI 6+, no signals to processes outside the sandbox
  (the grader cannot be killed from inside).

Everything is best-effort: on a kernel without Landlock (or not Linux), :func:`restrict` returns 0
and changes nothing; the grader then relies on its other layers (audit hook, detection).
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

__all__ = ["abi_version", "restrict"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same numbers on every architecture
_VERSION_FLAG = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM, REFER, TRUNCATE = 1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_WRITE_V1 = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM
_READ = READ_FILE | READ_DIR
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE  # the rights a rule on a regular file may carry


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return libc
    except OSError:
        return None


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    libc = _libc()
    if libc is None:
        return 0
    version = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION_FLAG))
    return max(int(version), 0)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _readable_roots(unreadable: list[Path]) -> list[Path]:
    """Paths whose whole subtree may be read: every sibling along the way from / to each unreadable path."""
    if not unreadable:
        return [Path("/")]
    chain: set[Path] = set()  # the folders that contain an unreadable path: readable only in part
    for path in unreadable:
        chain.update(path.parents)
    roots: list[Path] = []
    for folder in sorted(chain):
        try:
            entries = sorted(Path(folder).iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry in chain or any(_inside(entry, path) for path in unreadable):
                continue
            if entry.is_symlink():  # a link could point into an unreadable folder; its real target is
                continue            # allowed (or not) on its own path, e.g. /lib -> /usr/lib
            roots.append(entry)
    return roots


def restrict(writable: list[str | os.PathLike], unreadable: list[str | os.PathLike] = ()) -> int:
    """Restrict this process (and its future children) as described in the module docstring.

    Returns the Landlock ABI version used, or 0 when Landlock is unavailable (nothing changed).
    Raises ``OSError`` when Landlock is available but a step fails.
    """
    libc = _libc()
    abi = abi_version()
    if libc is None or abi < 1:
        return 0
    write_rights = _WRITE_V1 | (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0)
    read_rights = _READ if unreadable else 0
    attr = _RulesetAttr(
        handled_access_fs=write_rights | read_rights | EXECUTE,
        handled_access_net=(NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
        scoped=(SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")

    def allow(path: Path, rights: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # vanished or unreachable: nothing to allow
        try:
            if not os.path.isdir(path):
                rights &= _FILE_RIGHTS
            if not rights:
                return
            rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
            if libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    try:
        denied = [Path(os.path.realpath(path)) for path in unreadable]
        for root in _readable_roots(denied):
            allow(root, read_rights)
        for folder in writable:
            allow(Path(os.path.realpath(folder)), write_rights | read_rights)
        if Path("/dev").is_dir():
            allow(Path("/dev"), WRITE_FILE | read_rights)  # /dev/null, /dev/tty; no device can be created
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return abi
