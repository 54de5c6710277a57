"""GitHub Actions I/O: step outputs, the step summary, masks and log groups. Plain no-ops outside."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator, Mapping
from typing import TextIO


def in_actions(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def write_outputs(values: Mapping[str, str], env: Mapping[str, str]) -> bool:
    """Append name=value pairs to $GITHUB_OUTPUT (heredoc form for multi-line values)."""
    path = env.get("GITHUB_OUTPUT")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as out:
        for name, value in values.items():
            if "\n" in value:
                marker = f"EOF_{uuid.uuid4().hex}"
                out.write(f"{name}<<{marker}\n{value}\n{marker}\n")
            else:
                out.write(f"{name}={value}\n")
    return True


def append_summary(markdown: str, env: Mapping[str, str]) -> bool:
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as out:
        out.write(markdown.rstrip("\n") + "\n")
    return True


def mask(value: str, env: Mapping[str, str], stream: TextIO | None = None) -> None:
    """Register a secret with the Actions log masker before anything could print it."""
    if value and in_actions(env):
        for line in value.splitlines() or [value]:
            print(f"::add-mask::{line}", file=stream or sys.stdout, flush=True)


@contextlib.contextmanager
def group(title: str, env: Mapping[str, str], stream: TextIO | None = None) -> Iterator[None]:
    out = stream or sys.stdout
    if in_actions(env):
        print(f"::group::{title}", file=out, flush=True)
    try:
        yield
    finally:
        if in_actions(env):
            print("::endgroup::", file=out, flush=True)


def needs_verdict(needs_json: str) -> tuple[int, list[str]]:
    """(exit code, lines) over `toJSON(needs)`: any job that failed or was cancelled fails the run;
    skipped jobs (not selected) are fine. Unreadable input is a failure, never a pass."""
    import json

    try:
        needs = json.loads(needs_json)
    except json.JSONDecodeError:
        return 1, ["the jobs' results could not be read"]
    if not isinstance(needs, dict) or not all(isinstance(v, dict) for v in needs.values()):
        return 1, ["the jobs' results could not be read"]
    lines = [f"{name}: {job.get('result', 'unknown')}" for name, job in sorted(needs.items())]
    bad = [name for name, job in needs.items() if job.get("result") not in ("success", "skipped")]
    lines.append(f"FAILED: {', '.join(sorted(bad))}" if bad else f"PASSED: {len(needs)} job(s) succeeded or were skipped")
    return (1 if bad else 0), lines
