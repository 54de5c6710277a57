"""Errors that the command-line boundary turns into one stderr line, and the exit codes (one place):
0 passed, 1 tests (or a tool) failed, 2 bad input, 3 the CI's own setup failed before any test ran
(or the machine failed the run: ci.outcome), 130 cancelled by SIGINT, 143 by SIGTERM."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a test failed, or a tool did (pull, start)
    USAGE = 2  # bad input: a flag, a config file
    INFRASTRUCTURE = 3  # install, warm-up or the import proof failed: no test file ran, none failed
    # (also: preflight, smoke test, pull, container start, a lost container, a GPU hang: ci.outcome)
    CANCELLED = 130  # interrupted by SIGINT (128 + 2); never retried
    TERMINATED = 143  # interrupted by SIGTERM (128 + 15): what a cancelled GitHub job gets after SIGINT


class UserError(Exception):
    """Bad input from a person or a config file: said in one line, never with a traceback."""

    exit_code = ExitCode.USAGE
    multiline = False  # a report of several problems (a test tree, budgets) is printed whole


class ConfigError(UserError):
    """A config file that does not parse or does not validate."""


class ToolFailure(Exception):
    """An operation that failed for a reason outside the user's input (exit code 1)."""

    exit_code = ExitCode.FAILED


class InfraFailure(ToolFailure):
    """The CI's own setup failed (installing the checkout, warm-up, import proof): exit code 3."""

    exit_code = ExitCode.INFRASTRUCTURE


class ExitCodeUnknown(ToolFailure):
    """A command whose exit code the engine did not record (or that still ran after the wait):
    a failure, never a pass."""


class Terminated(BaseException):
    """SIGTERM (what a cancelled CI job gets after SIGINT), raised like KeyboardInterrupt so that
    `finally` blocks run, the container stops and reports are written."""

    signal_name = "SIGTERM"
    exit_code = ExitCode.TERMINATED


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Terminated for the block's duration, so it ends like SIGINT does (`finally`
    blocks run, containers stop, reports are written). Outside the main thread: left alone."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
