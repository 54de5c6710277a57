"""Process helpers shared by GPU hygiene, the container adapter and the stage runner."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable


def send(pid: int, sig: int) -> None:
    """Signal a process that may already be gone (or not ours)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie holds no memory and no device)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: Iterable[int], timeout_s: float, poll_s: float = 0.05) -> list[int]:
    """Wait until every pid is gone or the timeout passes; returns those still alive."""
    pids = list(pids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(poll_s)
    return [p for p in pids if alive(p)]


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children that left its process group included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
