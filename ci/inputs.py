"""Reading files and paths that come from outside (config, overrides, durations, output paths):
only a regular file is read, never a FIFO or device that could hang or never end, at most a
bounded size, as UTF-8; an output path must be writable. Problems come back as one short reason."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class InputProblem(Exception):
    """Why a path cannot be used, in a few words (the caller names the input)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_text(path: Path | str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`. Opened without blocking, so a FIFO
    with no writer is refused instead of waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputProblem(_why(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputProblem(f"{_kind(mode)}; allowed: a regular file")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise InputProblem(f"larger than {max_bytes} bytes (the most allowed)")
            chunks.append(chunk)
    except OSError as exc:
        raise InputProblem(_why(exc)) from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputProblem(f"not UTF-8 text (byte {exc.start}); allowed: UTF-8 text") from None


def check_writable_file(path: Path | str) -> None:
    """A file we will append to: a regular file (created if missing) or a character device such
    as /dev/null; never a directory or a FIFO (a write would wait for a reader)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise InputProblem(_why(exc) + "; allowed: a writable regular file") from None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        raise InputProblem(f"{_kind(mode)}; allowed: a writable regular file")


def check_output_dir(path: Path) -> None:
    """A folder we will write reports into: an existing writable folder, or one we can create."""
    if path.exists() and not path.is_dir():
        raise InputProblem("exists and is not a directory; allowed: a writable directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputProblem(_why(exc) + "; allowed: a writable directory (created if missing)") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputProblem("not writable; allowed: a writable directory (created if missing)")


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "not found"
    if exc.errno == errno.EISDIR:
        return "a directory"
    if exc.errno == errno.ENXIO:
        return "a FIFO with no reader"
    return (exc.strerror or str(exc)).lower()
