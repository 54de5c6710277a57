"""Change detection and job selection for the route job: which change filters a pull request's
files match (pure), which jobs run for an event, target stage, labels and changes (pure), and the
one git call that lists a pull request's changed files."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ci.config import Config, StageSpec, SuiteJob
from ci.errors import UserError

ALWAYS = "always"


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` within one path segment, `**` across any, `?` one character; the whole path must match."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(patterns: Sequence[str], path: str) -> bool:
    """A path matches when some plain pattern matches it and no `!` pattern does."""
    plain = [p for p in patterns if not p.startswith("!")]
    excluded = [p[1:] for p in patterns if p.startswith("!")]
    return any(_glob_regex(p).match(path) for p in plain) and not any(_glob_regex(p).match(path) for p in excluded)


def matched_filters(filters: Mapping[str, Sequence[str]], changed: Iterable[str], everything_if: Iterable[str] = ()) -> set[str]:
    """The filters any changed path matches; all of them when a path in `everything_if` changed."""
    changed = list(changed)
    if set(changed) & set(everything_if):
        return set(filters)
    return {name for name, patterns in filters.items() if any(matches(patterns, path) for path in changed)}


@dataclass(frozen=True)
class Selection:
    """What the event asks for: targets (stage or suite names, empty: all), changed filters
    (None: no change detection), labels of the pull request."""

    event: str
    targets: frozenset[str] = frozenset()
    changed: frozenset[str] | None = None
    labels: frozenset[str] = frozenset()
    run_all: bool = False


def parse_targets(config: Config, text: str | None) -> frozenset[str]:
    """A comma-separated list of stage or suite names; unknown names are an error."""
    names = {n.strip() for n in (text or "").split(",") if n.strip()}
    known = set(config.stages) | set(config.known_suites())
    unknown = sorted(names - known)
    if unknown:
        raise UserError(f"--target {', '.join(unknown)}: not a stage or suite (allowed: stage names such as "
                        f"{', '.join(config.stages)}, or a suite of stages.yaml)")
    return frozenset(names)


def job_runs(stage: StageSpec, job: SuiteJob, selection: Selection) -> tuple[bool, str]:
    """Whether the job runs for this selection, and why (for the route's log)."""
    if selection.targets:
        hit = stage.name in selection.targets or job.suite in selection.targets
        return hit, "targeted" if hit else "not targeted"
    if selection.event == "pull_request" and not selection.run_all:
        if stage.pr_label and stage.pr_label not in selection.labels:
            return False, f"needs the {stage.pr_label} label"
        if selection.changed is not None and job.changes != ALWAYS and job.changes not in selection.changed:
            return False, f"no change matches {job.changes}"
    return True, "runs"


def changed_files(workspace: Path, base: str, timeout_s: float) -> list[str]:
    """`git diff --name-only BASE HEAD` in the checkout (a pull request's merge commit: BASE is
    HEAD^1); no shell, no user text in argv beyond the validated revision."""
    if not re.fullmatch(r"[A-Za-z0-9_^~./-]{1,100}", base) or base.startswith("-"):
        raise UserError(f"--changes-since {base!r}: not a git revision (letters, digits, ^ ~ . / _ -)")
    try:
        done = subprocess.run(["git", "-C", str(workspace), "diff", "--name-only", base, "HEAD"],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"--changes-since {base}: git diff did not run ({exc})") from None
    if done.returncode != 0:
        raise UserError(f"--changes-since {base}: git diff failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return [line for line in done.stdout.splitlines() if line]
