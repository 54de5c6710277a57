"""Test files and their suites, from SGLang's registration calls parsed with `ast` (never
imported): `register_amd_ci(est_time, suite, nightly, disabled, *, stage, runner_config)`."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ci.config import Config
from ci.errors import UserError

POSITIONAL = ("est_time", "suite", "nightly", "disabled")
KEYWORDS = set(POSITIONAL) | {"stage", "runner_config"}


@dataclass(frozen=True)
class RegisteredFile:
    path: str  # relative to the test root, "/"-separated
    suite: str
    est_time: float
    nightly: bool = False
    disabled: str | None = None  # the reason, when disabled
    line: int = 0
    style: str = "unittest"  # unittest | pytest


class RegistrationError(UserError):
    """A registration call we cannot read, or that names a suite config does not know."""


def _literal(node: ast.expr, where: str, name: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise RegistrationError(f"{where}: {name} must be a literal, got `{ast.unparse(node)}`") from None


def registrations(source: str, path: str, function: str = "register_amd_ci") -> list[dict]:
    """The module-level calls of `function` in a file's source, as keyword dicts."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise RegistrationError(f"{path}:{exc.lineno}: cannot parse: {exc.msg}") from None
    found = []
    for statement in tree.body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        if not isinstance(call, ast.Call):
            continue
        name = call.func.id if isinstance(call.func, ast.Name) else call.func.attr if isinstance(call.func, ast.Attribute) else None
        if name != function:
            continue
        where = f"{path}:{call.lineno}"
        if len(call.args) > len(POSITIONAL):
            raise RegistrationError(f"{where}: {function} takes at most {len(POSITIONAL)} positional arguments")
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            raise RegistrationError(f"{where}: *args/**kwargs cannot be read statically")
        values = {POSITIONAL[i]: _literal(a, where, POSITIONAL[i]) for i, a in enumerate(call.args)}
        for keyword in call.keywords:
            if keyword.arg not in KEYWORDS:
                raise RegistrationError(f"{where}: unknown argument {keyword.arg!r} (allowed: {', '.join(sorted(KEYWORDS))})")
            if keyword.arg in values:
                raise RegistrationError(f"{where}: {keyword.arg} given twice")
            values[keyword.arg] = _literal(keyword.value, where, keyword.arg)
        values["line"] = call.lineno
        found.append(values)
    return found


def _suite_of(values: dict, where: str) -> str:
    if values.get("stage") is not None or values.get("runner_config") is not None:
        if values.get("stage") is None or values.get("runner_config") is None:
            raise RegistrationError(f"{where}: stage and runner_config go together")
        if values.get("suite") is not None:
            raise RegistrationError(f"{where}: give suite, or stage and runner_config, not both")
        return f"{values['stage']}-test-{values['runner_config']}"
    if not isinstance(values.get("suite"), str):
        raise RegistrationError(f"{where}: no suite (give suite=, or stage= and runner_config=)")
    return values["suite"]


def _style(source: str, configured: str) -> str:
    if configured != "auto":
        return configured
    return "pytest" if ("import pytest" in source or "from pytest" in source) and "unittest.main" not in source else "unittest"


def discover(root: Path, config: Config, arch: str | None = None) -> list[RegisteredFile]:
    """Every registration under `root` and every file config lists, validated against known suites."""
    suites = config.suites
    known = set(config.known_suites())
    overrides: Mapping[str, float] = suites.est_time_overrides.get(arch, {}) if arch else {}
    files: list[RegisteredFile] = []
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root).as_posix()
        source = file.read_text(encoding="utf-8", errors="replace")
        if suites.register_function not in source:
            continue
        for values in registrations(source, relative, suites.register_function):
            where = f"{relative}:{values['line']}"
            suite = _suite_of(values, where)
            if suite not in known:
                raise RegistrationError(f"{where}: suite {suite!r} is not known to config "
                                        f"(stages.yaml suites or suites.yaml extra_suites); it would never run")
            est = values.get("est_time")
            if not isinstance(est, (int, float)) or isinstance(est, bool) or est <= 0:
                raise RegistrationError(f"{where}: est_time must be a number of seconds > 0, got {est!r}")
            disabled = values.get("disabled")
            files.append(RegisteredFile(relative, suite, float(overrides.get(relative, est)), bool(values.get("nightly")),
                                  str(disabled) if disabled else None, values["line"], _style(source, suites.runner)))
    for suite, listed in suites.files.items():
        for item in listed:
            path = root / item.path
            style = _style(path.read_text(errors="replace"), suites.runner) if path.exists() else "unittest"
            files.append(RegisteredFile(item.path, suite, float(overrides.get(item.path, item.est_time)), line=0, style=style))
    return files


def select(files: Iterable[RegisteredFile], suites: Iterable[str], nightly: bool = False) -> tuple[list[RegisteredFile], list[RegisteredFile]]:
    """(to run, disabled) for these suites; nightly registrations only in nightly runs."""
    wanted = set(suites)
    chosen = [f for f in files if f.suite in wanted and f.nightly == nightly]
    return [f for f in chosen if not f.disabled], [f for f in chosen if f.disabled]
