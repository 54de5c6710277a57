"""Known issues from config/known_issues.yaml as a pytest plugin, for the resolved arch only.

Load it with `pytest -p ci.known_issues --sgl-arch mi300` (or SGL_CI_ARCH=mi300). `skip` entries
skip; `xfail` entries are strict, so a pass fails the run and the summary says the issue looks
fixed. Entries past their expiry date warn in the output and the terminal summary."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from ci.config import ARCH_ENV, KnownIssue, load_config
from ci.errors import UserError


def pattern(test: str) -> re.Pattern[str]:
    """A node-id glob: * and ? are wildcards; everything else, brackets included, is literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in test) + r"\Z")


def node_ids(nodeid: str) -> tuple[str, ...]:
    """The id as collected, and with leading folders dropped (configs name files, not paths)."""
    path, sep, rest = nodeid.partition("::")
    return (nodeid, path.rsplit("/", 1)[-1] + sep + rest)


def matching(issues: Iterable[KnownIssue], nodeid: str, arch: str) -> KnownIssue | None:
    for issue in issues:
        if arch in issue.arches and any(pattern(issue.test).match(i) for i in node_ids(nodeid)):
            return issue
    return None


def touching(issues: Iterable[KnownIssue], path: str, arch: str) -> list[KnownIssue]:
    """The issues for this arch whose test id names this file (so it must run under pytest)."""
    found = []
    for issue in issues:
        file_glob = issue.test.split("::", 1)[0]
        if arch in issue.arches and any(pattern(file_glob).match(i) for i in (path, path.rsplit("/", 1)[-1])):
            found.append(issue)
    return found


def expired(issues: Iterable[KnownIssue], today: dt.date) -> list[KnownIssue]:
    return [i for i in issues if i.expires is not None and i.expires < today]


def describe(issue: KnownIssue) -> str:
    return f"known issue on {', '.join(issue.arches)}: {issue.reason} ({issue.link})"


@dataclass
class _State:
    arch: str
    issues: tuple[KnownIssue, ...]
    expired: list[KnownIssue]
    applied: dict[str, KnownIssue]
    looks_fixed: list[str]


_KEY = pytest.StashKey[_State]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sgl-known-issues")
    group.addoption("--sgl-arch", default=None, help=f"runner arch for known issues (default: ${ARCH_ENV})")
    group.addoption("--sgl-today", default=None, help="date for expiry checks (YYYY-MM-DD; default today)")


def pytest_configure(config: pytest.Config) -> None:
    arch = config.getoption("--sgl-arch") or os.environ.get(ARCH_ENV)
    if not arch:
        raise pytest.UsageError(f"ci.known_issues needs --sgl-arch or {ARCH_ENV}")
    try:
        ci_config = load_config()
        ci_config.arch(arch)  # an unknown arch is a usage error, not a silent no-op
    except UserError as exc:  # a usage error, never an INTERNALERROR traceback
        raise pytest.UsageError(f"ci.known_issues: {str(exc).splitlines()[0]}") from None
    given = config.getoption("--sgl-today")
    try:
        today = dt.date.fromisoformat(given) if given else dt.date.today()
    except ValueError:
        raise pytest.UsageError(f"ci.known_issues: --sgl-today {given!r} is not a date (allowed: YYYY-MM-DD)") from None
    relevant = tuple(i for i in ci_config.known_issues if arch in i.arches)
    config.stash[_KEY] = _State(arch, relevant, expired(relevant, today), {}, [])
    for issue in config.stash[_KEY].expired:
        config.issue_config_time_warning(
            pytest.PytestWarning(f"EXPIRED known issue {issue.test} (expired {issue.expires}): re-check it: {issue.link}"),
            stacklevel=2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_KEY]
    for item in items:
        issue = matching(state.issues, item.nodeid, state.arch)
        if issue is None:
            continue
        state.applied[item.nodeid] = issue
        if issue.mode == "skip":
            item.add_marker(pytest.mark.skip(reason=describe(issue)))
        else:
            item.add_marker(pytest.mark.xfail(reason=describe(issue), strict=True))


@pytest.hookimpl(hookwrapper=True)  # old-style wrapper: the CI image's pytest may be older
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    state = item.config.stash[_KEY]
    issue = state.applied.get(item.nodeid)
    if issue and issue.mode == "xfail" and call.when == "call" and report.failed and not call.excinfo:
        # A strict xfail that passed: the known issue looks fixed.
        state.looks_fixed.append(item.nodeid)
        report.longrepr = (f"[XPASS(strict)] known issue looks fixed on {state.arch}: {item.nodeid} passed; "
                           f"remove it from config/known_issues.yaml ({issue.link})")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_KEY, None)
    if state is None:
        return
    applied = sorted(set(state.applied))
    if applied:
        terminalreporter.section(f"known issues applied on {state.arch}")
        for nodeid in applied:
            issue = state.applied[nodeid]
            terminalreporter.line(f"{issue.mode}: {nodeid}: {issue.reason} ({issue.link})")
    for nodeid in state.looks_fixed:
        terminalreporter.line(f"LOOKS FIXED: {nodeid} passed on {state.arch}; remove its known issue", red=True)
    for issue in state.expired:
        terminalreporter.line(f"EXPIRED known issue: {issue.test} (expired {issue.expires}, {issue.link})", yellow=True)
