"""Run a stage's test files, each in its own process group with its own timeout, inside the CI
container (`python3 -m ci.runner PLAN.json`; stdlib only, so the CI image needs nothing more).

A timed-out file's whole process tree is killed; the stage deadline kills what runs and reports
the rest as not run; retryable failures (accuracy, score, latency, throughput, timeouts) are
retried and a pass on retry is reported as flaky; an exit code of 0 is checked against what the
file's own output says (failures, or zero tests, mean failed). Results go to results.json after
every file, so a killed stage still leaves what it knew."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import TextIO

from ci import procs
from ci.procs import descendants
from ci.secrets import patterns, scrub, values

# How the known-issues plugin (ci.known_issues.describe) starts every skip and xfail reason.
KNOWN_ISSUE_REASON = "known issue on "
# The line that says what went wrong, for the summary ("AssertionError: throughput 812 < 900").
ERROR_LINE = re.compile(r"^(?:E\s+)?\w*(?:Error|Exception|Failure)\b:? .*$", re.MULTILINE)


class FileStatus(str, Enum):
    """A file's status, and an attempt's verdict (passed, failed or timeout only). str-valued: what
    results.json, replay.json, durations.json and the JUnit XML carry is the value, as before."""

    PASSED = "passed"
    FLAKY = "flaky"  # passed on a retry
    FAILED = "failed"
    TIMEOUT = "timeout"
    NOT_RUN = "not-run"
    DISABLED = "disabled"

    def __str__(self) -> str:  # f-strings and format() show the value on every Python (3.12 changed the default)
        return self.value


ATTEMPT_VERDICTS = (FileStatus.PASSED, FileStatus.FAILED, FileStatus.TIMEOUT)
PASSING = (FileStatus.PASSED, FileStatus.FLAKY)
BROKEN = (FileStatus.FAILED, FileStatus.TIMEOUT)  # counted as failed
UNRUN = (FileStatus.NOT_RUN, FileStatus.DISABLED)


@dataclass(frozen=True)
class FileRuns:
    """How each file is treated (config/runner.yaml, passed in plan.json: the runner reads no config)."""

    retryable: str  # a regex (case-insensitive): output that says a retry may pass
    not_retryable: str  # a regex (case as written): output that says it will not; wins
    kill_wait_s: float  # after the SIGKILL to a timed-out tree
    output_drain_s: float  # reading a finished file's leftover output
    tail_lines: int  # output lines kept for the failure reason


@dataclass(frozen=True)
class PlannedFile:
    path: str  # a file under the test root, or a command's name
    est_time: float
    style: str = "unittest"  # unittest | pytest | command
    timeout_s: float = 0.0  # its job's per-file timeout; 0: the plan's
    argv: tuple[str, ...] = ()  # command: what runs (no shell)
    cwd: str = ""  # command: where it runs
    env: dict[str, str] = field(default_factory=dict, repr=False)  # command: added to the environment
    selectors: tuple[str, ...] = ()  # a shard (path `file::A+B`): the test classes it runs


@dataclass(frozen=True)
class RunPlan:
    stage: str
    test_root: str
    report_dir: str
    files: tuple[PlannedFile, ...]
    per_file_timeout_s: float
    stage_timeout_s: float
    runs: FileRuns
    kill_grace_s: float  # SIGTERM to a timed-out tree, then SIGKILL (config: stages.yaml)
    retries: int = 0
    continue_on_error: bool = False
    python: str = sys.executable
    arch: str | None = None  # pytest runs load the known-issues plugin for this arch

    @staticmethod
    def load(path: Path) -> RunPlan:
        data = json.loads(path.read_text())
        data["runs"] = FileRuns(**data["runs"])
        data["files"] = tuple(PlannedFile(**{**f, "argv": tuple(f.get("argv", ())), "selectors": tuple(f.get("selectors", ()))})
                              for f in data["files"])
        return RunPlan(**data)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))


@dataclass
class Attempt:
    exit_code: int | None
    seconds: float
    verdict: FileStatus  # one of ATTEMPT_VERDICTS
    reason: str = ""
    retryable: bool = False
    tests: int | None = None  # what the file's own report says it ran
    failures: int | None = None

    def __post_init__(self) -> None:
        self.verdict = FileStatus(self.verdict)  # its value read back from JSON is the same verdict; anything else is refused
        if self.verdict not in ATTEMPT_VERDICTS:
            raise ValueError(f"an attempt's verdict is one of {', '.join(map(str, ATTEMPT_VERDICTS))}, not {self.verdict}")


@dataclass
class FileResult:
    path: str
    est_time: float
    status: FileStatus
    attempts: list[Attempt] = field(default_factory=list)
    reason: str = ""

    def __post_init__(self) -> None:
        self.status = FileStatus(self.status)

    @property
    def seconds(self) -> float:
        return sum(a.seconds for a in self.attempts)


def kill_tree(process: subprocess.Popen, grace_s: float, kill_wait_s: float) -> None:
    """TERM the process group and every descendant, then KILL what is left (procs.stop)."""
    procs.stop({process.pid}, grace_s, kill_wait_s, group=process.pid, rescan=lambda: descendants(process.pid))


def known_issue_skips(junit: Path) -> tuple[int, int]:
    """(skipped or xfailed tests, of which by a known issue) in a pytest JUnit report: the plugin's
    reasons start with KNOWN_ISSUE_REASON."""
    try:
        skips = [e.get("message", "") for e in ET.parse(junit).getroot().iter("skipped")]
    except (OSError, ET.ParseError, ValueError):
        return 0, 0
    return len(skips), sum(m.startswith(KNOWN_ISSUE_REASON) for m in skips)


def _own_report(style: str, output: str, junit: Path) -> tuple[int | None, int | None]:
    """(tests run, failures+errors) as the file itself reports them; None when it says nothing."""
    if style == "pytest":
        try:
            root = ET.parse(junit).getroot()
            suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
            tests = sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites)
            return tests, sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
        except (OSError, ET.ParseError, ValueError):
            return None, None
    ran = re.findall(r"^Ran (\d+) tests? in", output, re.MULTILINE)
    failed = re.findall(r"^FAILED \((?:failures=(\d+))?(?:, )?(?:errors=(\d+))?", output, re.MULTILINE)
    ran_tests = sum(int(n) for n in ran) if ran else None
    failures = sum(int(a or 0) + int(b or 0) for a, b in failed) if failed else (0 if ran else None)
    return ran_tests, failures


def run_once(plan: RunPlan, file: PlannedFile, timeout_s: float, log: TextIO, out: TextIO, junit: Path) -> Attempt:
    root = Path(plan.test_root)
    extra_env: dict[str, str] = {}
    target = file.path.split("::", 1)[0] if file.selectors else file.path  # a shard runs its file's classes
    if file.style == "command":
        argv, root, extra_env = list(file.argv), Path(file.cwd), dict(file.env)
    elif file.style == "pytest":
        nodes = [f"{target}::{name}" for name in file.selectors] or [target]
        argv = [plan.python, "-m", "pytest", *nodes, "-q", "-p", "no:cacheprovider", "-rsxX", f"--junitxml={junit}"]
        if plan.arch:
            argv += ["-p", "ci.known_issues", "--sgl-arch", plan.arch]
    else:
        argv = [plan.python, target, "-f", *file.selectors]
    junit.unlink(missing_ok=True)
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, env={**os.environ, **extra_env, "PYTHONUNBUFFERED": "1"})
    stdout = process.stdout
    if stdout is None:  # stdout=PIPE: Popen always opens it
        raise RuntimeError(f"no output pipe from {argv[0]}")
    tail: deque[str] = deque(maxlen=plan.runs.tail_lines)
    hidden = patterns(values(os.environ))

    def pump() -> None:
        for raw in iter(stdout.readline, b""):
            line = scrub(raw.decode(errors="replace"), hidden)  # logs, live output and reasons alike
            tail.append(line)
            log.write(line)
            out.write(line)
            out.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=max(timeout_s, 0.01))
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_tree(process, plan.kill_grace_s, plan.runs.kill_wait_s)
        code = process.wait()
        timed_out = True
    seconds = time.monotonic() - started
    # Children that escaped the group may hold the pipe: take what came, do not wait for them.
    reader.join(timeout=plan.runs.output_drain_s)
    if not timed_out:
        try:  # a server the file started and left running in its group goes with it
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    output = "".join(tail)
    if timed_out:
        return Attempt(code, seconds, FileStatus.TIMEOUT, f"killed after {timeout_s:.0f} s", retryable=True)
    if file.style == "command":  # a command (its own runner) reports through its exit code alone
        tests, failures = None, None
    else:
        tests, failures = _own_report(file.style, output, junit)
    if code != 0:
        crash = re.search(plan.runs.not_retryable, output)
        errors = ERROR_LINE.findall(output)
        why = f"exit code {code}" + (f": {errors[-1].strip()[:200]}" if errors else f" ({crash.group(0)})" if crash else "")
        return Attempt(code, seconds, FileStatus.FAILED, why,
                       retryable=not crash and bool(re.search(plan.runs.retryable, output, re.IGNORECASE)), tests=tests, failures=failures)
    if file.style == "command":
        return Attempt(code, seconds, FileStatus.PASSED)
    if failures:
        return Attempt(code, seconds, FileStatus.FAILED, f"exit code 0 but its own report shows {failures} failure(s)",
                       tests=tests, failures=failures)
    if tests is None:
        return Attempt(code, seconds, FileStatus.FAILED, "exit code 0 but it reported no test results", tests=tests)
    if tests == 0:
        skipped, known = known_issue_skips(junit) if file.style == "pytest" else (0, 0)
        if known and known == skipped:
            return Attempt(code, seconds, FileStatus.PASSED, f"all {known} test(s) skipped or xfailed by known issues",
                           tests=0, failures=0)
        return Attempt(code, seconds, FileStatus.FAILED, "exit code 0 but it ran zero tests", tests=0, failures=0)
    return Attempt(code, seconds, FileStatus.PASSED, tests=tests, failures=failures)


def run_plan(plan: RunPlan, out: TextIO = sys.stdout, clock=time.monotonic) -> list[FileResult]:
    report_dir = Path(plan.report_dir)
    (report_dir / "logs").mkdir(parents=True, exist_ok=True)
    deadline = clock() + plan.stage_timeout_s
    results = [FileResult(f.path, f.est_time, FileStatus.NOT_RUN) for f in plan.files]
    stop_reason = ""
    for index, (file, result) in enumerate(zip(plan.files, results), 1):
        if stop_reason:
            result.reason = stop_reason
            continue
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", file.path)
        for attempt_number in range(plan.retries + 1):
            left = deadline - clock()
            if left <= 0:
                stop_reason = f"stage timeout ({plan.stage_timeout_s / 60:g} min) reached"
                break
            per_file = file.timeout_s or plan.per_file_timeout_s
            timeout = min(per_file, left)
            print(f"=== [{index}/{len(plan.files)}] {file.path} (est {file.est_time:g} s, timeout {timeout:.0f} s"
                  f"{', retry ' + str(attempt_number) if attempt_number else ''})", file=out, flush=True)
            with open(report_dir / "logs" / f"{safe}.{attempt_number}.log", "w") as log:
                attempt = run_once(plan, file, timeout, log, out, report_dir / "logs" / f"{safe}.{attempt_number}.xml")
            if attempt.verdict is FileStatus.TIMEOUT and timeout < per_file:
                attempt.reason = f"stage timeout reached after {attempt.seconds:.0f} s"
                attempt.retryable = False
                stop_reason = f"stage timeout ({plan.stage_timeout_s / 60:g} min) reached"
            result.attempts.append(attempt)
            if attempt.verdict is FileStatus.PASSED or not attempt.retryable or stop_reason:
                break
        last = result.attempts[-1] if result.attempts else None
        if last is None:
            result.reason = stop_reason
        elif last.verdict is FileStatus.PASSED:
            result.status = FileStatus.FLAKY if len(result.attempts) > 1 else FileStatus.PASSED
            result.reason = "passed on retry after: " + result.attempts[0].reason if result.status is FileStatus.FLAKY else last.reason
        else:
            result.status = last.verdict
            result.reason = last.reason
            if not plan.continue_on_error and not stop_reason:
                stop_reason = f"not run: fail-fast after {file.path}"
        print(f"--- {file.path}: {result.status.upper()} in {result.seconds:.1f} s"
              + (f" ({result.reason})" if result.reason else ""), file=out, flush=True)
        write_results(report_dir, plan, results)
    write_results(report_dir, plan, results)
    return results


def write_results(report_dir: Path, plan: RunPlan, results: list[FileResult]) -> None:
    data = {"stage": plan.stage, "files": [{**asdict(r), "seconds": r.seconds} for r in results]}
    temporary = report_dir / "results.json.tmp"
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(report_dir / "results.json")


def read_results(report_dir: Path) -> list[FileResult]:
    data = json.loads((report_dir / "results.json").read_text())
    return [FileResult(f["path"], f["est_time"], f["status"], [Attempt(**a) for a in f["attempts"]], f["reason"])
            for f in data["files"]]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m ci.runner PLAN.json", file=sys.stderr)
        return 2
    results = run_plan(RunPlan.load(Path(argv[0])))
    return 0 if results and all(r.status in PASSING for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
