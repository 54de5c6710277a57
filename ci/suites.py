"""Test files and their suites, from SGLang's registration calls parsed with `ast` (never
imported): `register_amd_ci(est_time, suite, nightly, disabled, *, stage, runner_config)`.
One scan reads the whole tree once and collects every problem, so one run can list them all."""

from __future__ import annotations

import ast
import enum
import math
import os
import stat
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ci.config import Config
from ci.errors import UserError

POSITIONAL = ("est_time", "suite", "nightly", "disabled")
KEYWORDS = set(POSITIONAL) | {"stage", "runner_config"}


class Problem(enum.Enum):
    """Kinds of registration problems, in the order the report groups them."""

    UNREADABLE = "cannot be read or parsed"
    BAD_CALL = "registration call cannot be read statically"
    BAD_VALUE = "registration value of the wrong kind"
    CUDA_SUITE = "AMD registration names a CUDA suite"
    NEVER_RUNS = "suite has no job: it would never run"
    DUPLICATE = "file registered twice in one suite"
    NO_MAIN = "enabled unittest-style file without an executable __main__: it would run nothing"
    OVER_BUDGET = "estimate over the job's per-file timeout: it would always be killed"


@dataclass(frozen=True)
class Finding:
    kind: Problem
    where: str  # path:line
    message: str


@dataclass(frozen=True)
class RegisteredFile:
    path: str  # relative to the test root, "/"-separated
    suite: str
    est_time: float
    nightly: bool = False
    disabled: str | None = None  # the reason, when disabled
    line: int = 0
    style: str = "unittest"  # unittest | pytest
    has_main: bool = True


@dataclass(frozen=True)
class TreeScan:
    """Every AMD registration in a tree, the CUDA suite names, and what could not be read."""

    root: Path
    files: tuple[RegisteredFile, ...]
    cuda_suites: frozenset[str]  # from the files that register for AMD too
    findings: tuple[Finding, ...] = ()
    cuda_only: tuple[Path, ...] = ()  # files with only CUDA registrations: parsed only when needed

    def all_cuda_suites(self, function: str) -> frozenset[str]:
        """Every CUDA suite name in the tree (reads the CUDA-only files; costs a parse each)."""
        found = set(self.cuda_suites)
        for path in self.cuda_only:
            try:
                tree = ast.parse(path.read_bytes().decode("utf-8"))
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
                continue
            found |= _cuda_suites(tree, function)
        return frozenset(found)


@dataclass(frozen=True)
class TreeCheck:
    problems: tuple[Finding, ...]
    warnings: tuple[str, ...]  # acknowledged mistakes, said on every plan


class TreeProblems(UserError):
    """Every problem of a test tree, grouped by kind: printed whole, exit code 2."""

    multiline = True

    def __init__(self, problems: Iterable[Finding], title: str = "the test tree") -> None:
        problems = list(problems)
        lines = [f"{title} has {len(problems)} problem(s); fix the tree or config (stages.yaml jobs, "
                 f"suites.yaml acknowledged):"]
        for kind in Problem:
            group = [p for p in problems if p.kind is kind]
            if group:
                lines.append(f"  {kind.value} ({len(group)}):")
                lines += [f"    {p.where}: {p.message}" for p in sorted(group, key=lambda p: p.where)]
        super().__init__("\n".join(lines))


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _has_main(tree: ast.Module) -> bool:
    """`if __name__ == "__main__":` with a call in its body, as SGLang's registration API checks."""
    for statement in tree.body:
        test = statement.test if isinstance(statement, ast.If) else None
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
                and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value == "__main__"):
            module = ast.Module(body=statement.body, type_ignores=[])
            if any(isinstance(node, ast.Call) for node in ast.walk(module)):
                return True
    return False


def _read_call(call: ast.Call, where: str, function: str, findings: list[Finding]) -> dict | None:
    """The call's arguments as literals, or None (with a finding) when they cannot be read."""
    if len(call.args) > len(POSITIONAL):
        findings.append(Finding(Problem.BAD_CALL, where, f"{function} takes at most {len(POSITIONAL)} positional arguments"))
        return None
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        findings.append(Finding(Problem.BAD_CALL, where, "*args/**kwargs cannot be read statically"))
        return None
    pairs = list(zip(POSITIONAL, call.args)) + [(k.arg, k.value) for k in call.keywords]
    values: dict = {}
    for name, node in pairs:
        if name not in KEYWORDS:
            findings.append(Finding(Problem.BAD_CALL, where, f"unknown argument {name!r} (allowed: {', '.join(sorted(KEYWORDS))})"))
            return None
        if name in values:
            findings.append(Finding(Problem.BAD_CALL, where, f"{name} given twice"))
            return None
        try:
            values[name] = ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            findings.append(Finding(Problem.BAD_CALL, where, f"{name} must be a literal, got `{ast.unparse(node)[:80]}`"))
            return None
    return values


def _suite_of(values: dict, where: str, findings: list[Finding]) -> str | None:
    stage, runner_config, suite = values.get("stage"), values.get("runner_config"), values.get("suite")
    if stage is not None or runner_config is not None:
        if not (isinstance(stage, str) and isinstance(runner_config, str)) or suite is not None:
            findings.append(Finding(Problem.BAD_CALL, where, "give suite=, or stage= and runner_config= (both strings), not a mix"))
            return None
        return f"{stage}-test-{runner_config}"
    if not isinstance(suite, str) or not suite:
        findings.append(Finding(Problem.BAD_CALL, where, f"no suite (give suite=, or stage= and runner_config=), got {suite!r}"))
        return None
    return suite


def _checked_values(values: dict, where: str, findings: list[Finding]) -> tuple[float, bool, str | None] | None:
    est, nightly, disabled = values.get("est_time"), values.get("nightly", False), values.get("disabled")
    bad = []
    if not isinstance(est, (int, float)) or isinstance(est, bool) or not math.isfinite(est) or est <= 0:
        bad.append(f"est_time must be a finite number of seconds > 0, got {est!r}")
    if not isinstance(nightly, bool):
        bad.append(f"nightly must be True or False, got {nightly!r}")
    if disabled is not None and (not isinstance(disabled, str) or not disabled.strip()):
        bad.append(f"disabled must be a reason (a non-empty string) or absent, got {disabled!r}")
    for message in bad:
        findings.append(Finding(Problem.BAD_VALUE, where, message))
    return None if bad else (float(est), nightly, disabled)


def style_of(source: str, configured: str) -> str:
    if configured != "auto":
        return configured
    return "pytest" if ("import pytest" in source or "from pytest" in source) and "unittest.main" not in source else "unittest"


def _regular_python_files(root: Path) -> Iterable[Path]:
    """Regular *.py files under root, never through a link (no loops, nothing outside the root)."""
    for directory, subdirs, names in os.walk(root, followlinks=False):
        subdirs.sort()
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = Path(directory, name)
            try:
                if stat.S_ISREG(path.lstat().st_mode):
                    yield path
            except OSError:
                continue


def _cuda_suites(tree: ast.Module, function: str) -> set[str]:
    found = set()
    for statement in tree.body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        if isinstance(call, ast.Call) and _call_name(call) == function:
            values = _read_call(call, "", function, [])
            suite = _suite_of(values, "", []) if values else None
            if suite:
                found.add(suite)
    return found


def scan_tree(root: Path, config: Config) -> TreeScan:
    """Read every registration under `root` once (files without the function's name are skipped
    unread by the parser) and the CUDA suite names the same files use."""
    suites = config.suites
    amd, cuda = suites.register_function, suites.cuda_register_function
    files: list[RegisteredFile] = []
    cuda_suites: set[str] = set()
    cuda_only: list[Path] = []
    findings: list[Finding] = []
    for file in _regular_python_files(root):
        relative = file.relative_to(root).as_posix()
        try:
            source = file.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"cannot be read: {exc.strerror or exc}"
            findings.append(Finding(Problem.UNREADABLE, relative, why))  # a file we cannot read must not silently never run
            continue
        if amd not in source:
            if cuda in source:
                cuda_only.append(file)
            continue
        try:
            tree = ast.parse(source, filename=relative)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            line = getattr(exc, "lineno", None)
            findings.append(Finding(Problem.UNREADABLE, f"{relative}:{line or 0}", f"cannot parse: {getattr(exc, 'msg', exc)}"))
            continue
        cuda_suites |= _cuda_suites(tree, cuda)
        main = None
        for statement in tree.body:
            call = statement.value if isinstance(statement, ast.Expr) else None
            if not isinstance(call, ast.Call):
                continue
            where = f"{relative}:{call.lineno}"
            if _call_name(call) != amd:
                continue
            if not isinstance(call.func, ast.Name):
                findings.append(Finding(Problem.BAD_CALL, where, f"`{ast.unparse(call.func)}(...)`: SGLang's collector reads "
                                        f"only a bare `{amd}(...)` call, so SGLang would never run this file"))
                continue
            values = _read_call(call, where, amd, findings)
            suite = _suite_of(values, where, findings) if values is not None else None
            checked = _checked_values(values, where, findings) if values is not None else None
            if suite is None or checked is None:
                continue
            est, nightly, disabled = checked
            main = _has_main(tree) if main is None else main
            files.append(RegisteredFile(relative, suite, est, nightly, disabled, call.lineno,
                                        style_of(source, suites.runner), main))
    return TreeScan(root, tuple(files), frozenset(cuda_suites), tuple(findings), tuple(cuda_only))


def check_tree(scan: TreeScan, config: Config) -> TreeCheck:
    """Every problem of the scanned tree against config, and the acknowledged mistakes as warnings."""
    problems = list(scan.findings)
    cadence = {job.suite: stage.nightly for stage in config.stages.values() for job in stage.suites}
    jobs = {job.suite: job for stage in config.stages.values() for job in stage.suites}
    known = set(cadence)
    acknowledged: dict[str, list[RegisteredFile]] = defaultdict(list)
    seen: dict[tuple[str, str], int] = {}
    unknown = {f.suite for f in scan.files if f.suite not in known and config.acknowledged(f.suite) is None}
    cuda_suites = scan.all_cuda_suites(config.suites.cuda_register_function) if unknown - scan.cuda_suites else scan.cuda_suites
    for f in scan.files:
        where = f"{f.path}:{f.line}"
        ack = config.acknowledged(f.suite)
        if f.suite not in known:
            if ack is not None:
                acknowledged[f.suite].append(f)
            elif f.suite in cuda_suites:
                problems.append(Finding(Problem.CUDA_SUITE, where, f"suite {f.suite!r} is a CUDA suite (register_cuda_ci uses it); "
                                        f"the AMD name is probably meant, or acknowledge it in suites.yaml"))
            else:
                problems.append(Finding(Problem.NEVER_RUNS, where, f"suite {f.suite!r} has no job in stages.yaml "
                                        f"(add one, or acknowledge it in suites.yaml with a reason)"))
        elif cadence[f.suite] != f.nightly:
            runs = "a nightly" if cadence[f.suite] else "a per-commit"
            problems.append(Finding(Problem.NEVER_RUNS, where, f"registered nightly={f.nightly} but suite {f.suite!r} runs in "
                                    f"{runs} stage, which selects only nightly={cadence[f.suite]} files"))
        key = (f.suite, f.path)
        if key in seen:
            problems.append(Finding(Problem.DUPLICATE, where, f"{f.path} is already registered to {f.suite!r} on line {seen[key]}"))
        else:
            seen[key] = f.line
        if f.suite in jobs and cadence[f.suite] == f.nightly and not f.disabled:
            job = jobs[f.suite]
            over = [(arch, est, job.per_file_timeout_for(arch)) for arch in job.arches
                    for est in [config.suites.est_time_overrides.get(arch, {}).get(f.path, f.est_time)]
                    if est > job.per_file_timeout_for(arch)]
            if over:
                problems.append(Finding(Problem.OVER_BUDGET, where, f"{f.suite}: estimated at " + ", ".join(
                    f"{est:g} s on {arch} (per-file timeout {limit:g} s)" for arch, est, limit in over)
                    + ": raise per_file_timeout_s in stages.yaml or fix the estimate"))
        if not f.disabled and f.style == "unittest" and not f.has_main:
            problems.append(Finding(Problem.NO_MAIN, where, "`python3 FILE -f` would exit 0 without running a test: "
                                    "add `unittest.main()` or `sys.exit(pytest.main([__file__]))` under __main__"))
    warnings = []
    for ack in config.suites.acknowledged:
        hit = [f for s in ack.suites for f in acknowledged.get(s, [])]
        if hit:
            names = sorted({f.suite for f in hit})
            shown = ", ".join(names) if len(names) <= 3 else f"{len(names)} suites ({names[0]}, ...)"
            warnings.append(f"acknowledged: {len(hit)} file(s) in {shown} run nowhere: {ack.reason} ({ack.link})")
    return TreeCheck(tuple(problems), tuple(warnings))


def select(files: Iterable[RegisteredFile], suite: str, nightly: bool) -> tuple[list[RegisteredFile], list[RegisteredFile]]:
    """(to run, disabled) for one suite; nightly registrations only in nightly runs."""
    chosen = [f for f in files if f.suite == suite and f.nightly == nightly]
    return [f for f in chosen if not f.disabled], [f for f in chosen if f.disabled]
