"""What nox registers, read from config alone (no Docker SDK, no test tree): the arches the stage
sessions are parametrized over, and each stage's name and description. Light on purpose: `nox -l`
imports this and nothing else of the library."""

from __future__ import annotations

import functools

from ci.config import Config, load_config


@functools.cache
def _config() -> Config:
    return load_config()  # once per nox process, for both questions below


def arch_names() -> list[str]:
    """The arches nox parametrizes the stage sessions over."""
    return list(_config().arches)


def stage_sessions() -> list[tuple[str, str]]:
    """(stage name, description) of every stage: nox registers one session each."""
    return [(name, spec.description) for name, spec in _config().stages.items()]
