"""What the host reads back from, and writes into, the workspace the CI container can write: no link
below the workspace is followed, no FIFO waited on, and the runner's results and threshold records
are parsed strictly (a malformed entry fails the stage with a note, never a traceback)."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ci.errors import ToolFailure
from ci.runner import ATTEMPT_VERDICTS, Attempt, FileResult, FileStatus
from ci.thresholds import Bound, Checked

# What the runner writes is small (a line per file and per check); far past that is tampering.
MAX_READ_BYTES = 64 * 1024 * 1024
STATUSES = frozenset(v.value for v in FileStatus)
VERDICTS = frozenset(v.value for v in ATTEMPT_VERDICTS)


class UnsafePath(ToolFailure):
    """A path under the workspace that is a link or not what it should be: nothing is read or written."""


def _parts(root: Path, path: Path) -> list[str]:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = Path(relative).parts
    if relative == "." or not parts or parts[0] == ".." or os.path.isabs(relative):
        raise UnsafePath(f"{path} is not under {root}")
    return list(parts)


@contextmanager
def _directory(root: Path, parts: list[str], create: bool = False) -> Iterator[int]:
    """A descriptor of root/parts, walked one folder at a time without following any link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, flags)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise UnsafePath(f"{part} (under {root}) is a link or not a folder: {exc.strerror}") from None
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def read_under(root: Path, path: Path, max_bytes: int = MAX_READ_BYTES) -> str | None:
    """The text of a regular file under root, never through a link; None when it does not exist."""
    *folders, name = _parts(root, path)
    try:
        with _directory(root, folders) as fd:
            try:
                file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise UnsafePath(f"{path} is a link or cannot be opened: {exc.strerror}") from None
            with os.fdopen(file_fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise UnsafePath(f"{path} is not a regular file")
                data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    if len(data) > max_bytes:
        raise UnsafePath(f"{path} is larger than {max_bytes} bytes")
    return data.decode("utf-8", errors="replace")


def write_under(root: Path, path: Path, text: str) -> None:
    """Write a file under root: folders walked without following links, the file written beside
    its name and moved over it (a link in its place is replaced, never written through)."""
    *folders, name = _parts(root, path)
    with _directory(root, folders, create=True) as fd:
        temporary = f".{name}.{os.getpid()}.tmp"
        try:
            os.unlink(temporary, dir_fd=fd)
        except FileNotFoundError:
            pass
        file_fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                          0o644, dir_fd=fd)
        with os.fdopen(file_fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} is not a finite number")
    return value


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not text")
    return value


def results_from_text(text: str) -> list[FileResult]:
    """The runner's results.json, every field checked; ValueError says what is wrong."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({getattr(exc, 'msg', 'too deeply nested')})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("not an object with a list of files")
    results = []
    for entry in data["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("attempts"), list):
            raise ValueError("a file entry is not an object with a list of attempts")
        status = _text(entry.get("status"), "status")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status[:40]!r}")
        attempts = []
        for a in entry["attempts"]:
            if not isinstance(a, dict):
                raise ValueError("an attempt is not an object")
            verdict = _text(a.get("verdict"), "verdict")
            if verdict not in VERDICTS:
                raise ValueError(f"unknown verdict {verdict[:40]!r}")
            code = a.get("exit_code")
            if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
                raise ValueError("exit_code is not a whole number")
            tests, failures = a.get("tests"), a.get("failures")
            for count, label in ((tests, "tests"), (failures, "failures")):
                if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
                    raise ValueError(f"{label} is not a whole number")
            attempts.append(Attempt(code, float(_number(a.get("seconds"), "seconds")), FileStatus(verdict),
                                    _text(a.get("reason", ""), "reason"), bool(a.get("retryable", False)), tests, failures))
        results.append(FileResult(_text(entry.get("path"), "path"), float(_number(entry.get("est_time"), "est_time")),
                                  FileStatus(status), attempts, _text(entry.get("reason", ""), "reason")))
    return results


def records_from_text(text: str) -> tuple[list[Checked], int]:
    """Threshold records (JSON lines) and how many lines were malformed and left out."""
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            b = data["bound"]
            bound = Bound(_text(b["test"], "test"), _text(b["metric"], "metric"), _text(b["kind"], "kind"),
                          float(_number(b["value"], "value")), float(_number(b["default_value"], "default_value")),
                          _text(b["unit"], "unit"), _text(b["source"], "source"), dict(b.get("params") or {}))
            records.append(Checked(bound, float(_number(data["measured"], "measured")), bool(data["ok"]),
                                   float(_number(data["margin_pct"], "margin_pct"))))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            bad += 1
    return records, bad
