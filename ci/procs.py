"""Process helpers shared by GPU hygiene, the container adapter and the stage runner (stdlib only:
the runner imports it inside the CI container). The one signal-wait-kill sequence is `stop`."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable


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


# How often /proc is read while waiting for processes to go: a granularity of the wait, not a
# policy (the graces and waits themselves come from config), so it stays here.
POLL_S = 0.05


def wait_gone(pids: Iterable[int], timeout_s: float, poll_s: float = POLL_S) -> list[int]:
    """Wait until every pid is gone or the timeout passes; returns those still alive."""
    pids = list(pids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(poll_s)
    return [p for p in pids if alive(p)]


def stop(pids: Iterable[int], grace_s: float, kill_wait_s: float, *, first: int = signal.SIGTERM,
         group: int | None = None, rescan: Callable[[], Iterable[int]] | None = None,
         on_kill: Callable[[list[int]], None] | None = None) -> list[int]:
    """`first` (SIGTERM, or SIGINT for a container's exec) to every pid, wait up to grace_s, then
    SIGKILL what is left and wait up to kill_wait_s. `group`: a process group signalled too (a
    runner's file); `rescan`: more pids found before each signal (children forked meanwhile);
    `on_kill`: told who is about to be killed. Returns the pids still alive at the end."""
    tree = set(pids)
    for sig, wait_s in ((first, grace_s), (signal.SIGKILL, kill_wait_s)):
        if group is not None:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if rescan is not None:
            tree |= set(rescan())
        if sig == signal.SIGKILL and on_kill is not None:
            on_kill(sorted(tree))
        for pid in tree:
            send(pid, sig)
        tree = set(wait_gone(tree, wait_s))
        if not tree:
            break
    return sorted(tree)


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
