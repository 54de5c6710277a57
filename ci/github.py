"""GitHub Actions I/O: step outputs, the step summary, masks and log groups. Plain no-ops outside."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

from ci.errors import UserError
from ci.inputs import InputProblem, check_writable_file

FILE_ENV = ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")


def workspace(env: Mapping[str, str]) -> Path:
    """The SGLang checkout: $GITHUB_WORKSPACE in Actions, else the current folder (the one rule;
    config's mount source $WORKSPACE is this path)."""
    return Path(env.get("GITHUB_WORKSPACE") or os.getcwd())


def in_actions(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def check_files(env: Mapping[str, str], names: tuple[str, ...] = FILE_ENV) -> None:
    """Before any work: each of $GITHUB_OUTPUT / $GITHUB_STEP_SUMMARY that is set must be a file
    we can append to, so a command never does its work and then fails to say so."""
    for name in names:
        path = env.get(name)
        if path:
            try:
                check_writable_file(path)
            except InputProblem as problem:
                raise UserError(f"{name}={path}: cannot be written: {problem}") from None


def _append(name: str, env: Mapping[str, str], text: str) -> bool:
    path = env.get(name)
    if not path:
        return False
    check_files(env, (name,))
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise UserError(f"{name}={path}: cannot be written: {(exc.strerror or str(exc)).lower()}") from None
    return True


def write_outputs(values: Mapping[str, str], env: Mapping[str, str]) -> bool:
    """Append name=value pairs to $GITHUB_OUTPUT (heredoc form for multi-line values)."""
    lines = []
    for name, value in values.items():
        if "\n" in value:
            marker = f"EOF_{uuid.uuid4().hex}"
            lines.append(f"{name}<<{marker}\n{value}\n{marker}\n")
        else:
            lines.append(f"{name}={value}\n")
    return _append("GITHUB_OUTPUT", env, "".join(lines))


def append_summary(markdown: str, env: Mapping[str, str]) -> bool:
    return _append("GITHUB_STEP_SUMMARY", env, markdown.rstrip("\n") + "\n")


_MASKED: set[str] = set()  # what this process has registered: each line once


def mask(value: str, env: Mapping[str, str], stream: TextIO | None = None) -> None:
    """Register a secret with the Actions log masker before anything could print it (each line
    once per process: the door masks every known secret first, an operation may mask again)."""
    if value and in_actions(env):
        for line in value.splitlines() or [value]:
            if line and line not in _MASKED:
                print(f"::add-mask::{line}", file=stream or sys.stdout, flush=True)
                _MASKED.add(line)


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
    except (json.JSONDecodeError, RecursionError):
        return 1, ["the jobs' results could not be read"]
    if not isinstance(needs, dict) or not all(isinstance(v, dict) for v in needs.values()):
        return 1, ["the jobs' results could not be read"]
    lines = [f"{name}: {job.get('result', 'unknown')}" for name, job in sorted(needs.items())]
    bad = [name for name, job in needs.items() if job.get("result") not in ("success", "skipped")]
    lines.append(f"FAILED: {', '.join(sorted(bad))}" if bad else f"PASSED: {len(needs)} job(s) succeeded or were skipped")
    return (1 if bad else 0), lines
