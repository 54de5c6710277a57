"""nox sessions: one per stage in config/stages.yaml (parametrized over runner_arch), the demo,
and the test suite. Thin doors only: each parses nothing itself and calls one function in ci/.

Sessions run in the runner's own Python (venv_backend "none"): the project is installed once,
so no CI run rebuilds a virtualenv, and the stage work happens in Docker.
"""

from __future__ import annotations

import logging
import sys

import nox

from ci import cli, sessions

nox.needs_version = ">=2024.3"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

RUNNER_ARCHES = cli.run(sessions.arch_names)


def _run(command: str, *args: object) -> None:
    """Import the commands only when a session runs: `nox -l` reads config and nothing more."""
    from ci import commands

    cli.run(getattr(commands, command), *args)


class _NoUvNotice(logging.Filter):
    """nox looks for uv even when no session makes a virtualenv; that notice is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "uv binary not found" not in record.getMessage()


logging.getLogger("nox").addFilter(_NoUvNotice())


def _register_stage(stage: str, description: str) -> None:
    def run_stage(session: nox.Session, runner_arch: str) -> None:
        _run("stage_session", stage, runner_arch, session.posargs, session.skip)

    run_stage.__doc__ = description
    nox.session(name=stage.replace("-", "_"))(nox.parametrize("runner_arch", RUNNER_ARCHES)(run_stage))


for _stage, _description in cli.run(sessions.stage_sessions):
    _register_stage(_stage, _description)


@nox.session
def demo(session: nox.Session) -> None:
    """The whole path end to end on loopback: registries, pull, container, stage, reports."""
    from demo import run  # outside ci/: CI runs never load the demo's sample files or sandbox

    cli.run(run.run_demo)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the code, tests, benchmarks and doors (config in pyproject.toml)."""
    session.run(sys.executable, "-m", "ruff", "check", "ci", "demo", "tests", "bench", "sgl_kernel_tests", "tasks.py", "noxfile.py",
                *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on ci/ (config in pyproject.toml: Optional misuse and untyped bodies are checked)."""
    session.run(sys.executable, "-m", "mypy", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what .ci/run runs); arguments after -- go to pytest."""
    session.run(sys.executable, "-m", "pytest", *session.posargs)  # nox's own Python: no venv here
