"""Whose failure it is: every stage result gets one class, in one place, and the class decides the
JUnit property, the summary's verdict line and the exit code, so a workflow can retry an
infrastructure failure on another runner and never retry a test failure.

| class | exit code | what |
|---|---|---|
| passed | 0 | every file passed |
| flaky | 0 | every file passed, some only on a retry |
| test | 1 | a test failed (or timed out, or ran nothing) on a machine that was fit |
| infrastructure | 3 | the machine or the CI failed it: pull, container start, install, preflight, smoke test, a lost container, a GPU hang (SIGABRT, exit 134), a timeout with the GPU stuck busy |
| cancelled | 130 | interrupted (SIGINT or SIGTERM: a cancelled workflow) |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from ci.errors import ExitCode
from ci.runner import BROKEN, UNRUN, FileStatus

OUTPUT_NAME = "failure_class"  # the step output the workflow's retry rule reads
JUNIT_PROPERTY = "sgl-ci.failure-class"
JUNIT_REASON = "sgl-ci.failure-reason"


class FailureClass(str, Enum):
    PASSED = "passed"
    FLAKY = "flaky"
    TEST = "test"
    INFRASTRUCTURE = "infrastructure"
    CANCELLED = "cancelled"

    @property
    def exit_code(self) -> int:
        return {FailureClass.PASSED: ExitCode.OK, FailureClass.FLAKY: ExitCode.OK, FailureClass.TEST: ExitCode.FAILED,
                FailureClass.INFRASTRUCTURE: ExitCode.INFRASTRUCTURE, FailureClass.CANCELLED: ExitCode.CANCELLED}[self]

    @property
    def headline(self) -> str:
        return {FailureClass.PASSED: "PASSED", FailureClass.FLAKY: "PASSED (flaky)", FailureClass.TEST: "FAILED",
                FailureClass.INFRASTRUCTURE: "INFRASTRUCTURE FAILURE", FailureClass.CANCELLED: "CANCELLED"}[self]

    @property
    def retry(self) -> bool:
        """Worth running again on another runner: only what was not the tests' fault."""
        return self is FailureClass.INFRASTRUCTURE


@dataclass(frozen=True)
class Outcome:
    failure_class: FailureClass
    reason: str  # one line: what decided the class

    @property
    def exit_code(self) -> int:
        return self.failure_class.exit_code

    def verdict(self, counts: str) -> str:
        """The summary's verdict line: the class first, then the counts and what decided it."""
        c = self.failure_class
        if c is FailureClass.PASSED:
            return f"PASSED: {counts}"
        if c is FailureClass.FLAKY:
            return f"PASSED (flaky): {counts} (flaky files passed on retry: look at them)"
        if c is FailureClass.TEST:
            return f"FAILED (test failure): {counts}; {self.reason}"
        return f"{c.headline}: {self.reason} ({counts})"


@dataclass(frozen=True)
class Attempted:
    """What classification needs of one file's result (ci.runner.FileResult has these)."""

    path: str
    status: FileStatus
    exit_codes: tuple[int | None, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", FileStatus(self.status))  # its JSON value is the same status


def gpu_hang(files: Iterable[Attempted], hang_codes: Sequence[int]) -> str | None:
    """The first file whose last attempt ended the way a GPU hang does (SIGABRT)."""
    for f in files:
        if f.status in (FileStatus.FAILED, FileStatus.FLAKY) and f.exit_codes and f.exit_codes[-1] in hang_codes:
            return f"{f.path} aborted with exit code {f.exit_codes[-1]} (SIGABRT: how ROCm reports a GPU hang)"
    return None


def classify(files: Sequence[Attempted], hang_codes: Sequence[int], *, infrastructure: str | None = None,
             cancelled: str | None = None, stuck_gpu: str | None = None, lost_container: str | None = None) -> Outcome:
    """One class for the stage. Cancelled first (nobody's fault, never retried), then what the
    machine did (infrastructure), then what the tests did."""
    if cancelled:
        return Outcome(FailureClass.CANCELLED, cancelled)
    for reason in (infrastructure, lost_container):
        if reason:
            return Outcome(FailureClass.INFRASTRUCTURE, reason)
    hang = gpu_hang(files, hang_codes)
    if hang:
        return Outcome(FailureClass.INFRASTRUCTURE, hang)
    timed_out = [f for f in files if f.status is FileStatus.TIMEOUT]
    if timed_out and stuck_gpu:
        return Outcome(FailureClass.INFRASTRUCTURE, f"{timed_out[0].path} timed out and {stuck_gpu}")
    ran = [f for f in files if f.status not in UNRUN]
    if not ran:
        return Outcome(FailureClass.TEST, "no test file ran")
    bad = [f for f in files if f.status in BROKEN]
    if bad:
        return Outcome(FailureClass.TEST, f"{bad[0].path} {bad[0].status}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    if any(f.status is FileStatus.FLAKY for f in files):
        return Outcome(FailureClass.FLAKY, "passed on retry: look at the flaky files")
    return Outcome(FailureClass.PASSED, "")


def class_of_exit_code(code: int) -> FailureClass:
    """What a stage's exit code says (the inverse of FailureClass.exit_code; 0 reads as passed)."""
    return {0: FailureClass.PASSED, ExitCode.INFRASTRUCTURE: FailureClass.INFRASTRUCTURE,
            ExitCode.CANCELLED: FailureClass.CANCELLED}.get(code, FailureClass.TEST)
