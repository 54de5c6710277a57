"""nox sessions: stage_a/b/c parametrized over runner_arch, and the test suite. Thin doors only.

Sessions run in the runner's own Python (venv_backend "none"): the project is installed once
(`pip install -e .`), so no CI run rebuilds a virtualenv, and the stage work happens in Docker.
"""

import nox

from ci import cli, commands

nox.needs_version = ">=2024.3"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

RUNNER_ARCHES = cli.run(commands.arch_names)


def stage(session: nox.Session, name: str, runner_arch: str) -> None:
    cli.run(commands.stage_session, name, runner_arch, session.posargs, session.skip)


@nox.session
@nox.parametrize("runner_arch", RUNNER_ARCHES)
def stage_a(session, runner_arch):
    stage(session, "stage-a", runner_arch)


@nox.session
@nox.parametrize("runner_arch", RUNNER_ARCHES)
def stage_b(session, runner_arch):
    stage(session, "stage-b", runner_arch)


@nox.session
@nox.parametrize("runner_arch", RUNNER_ARCHES)
def stage_c(session, runner_arch):
    stage(session, "stage-c", runner_arch)


@nox.session
def demo(session):
    cli.run(commands.demo_command)


@nox.session
def tests(session):
    session.run("python", "-m", "pytest", *session.posargs)
