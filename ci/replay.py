"""The replay record: what a stage run needs to be run again, written by every stage next to its
junit.xml as replay.json (small, versioned, one file), carried into the JUnit as properties and
named by the one-line command that ends the summary; read back, strictly, from a path, a report
folder or an http(s) URL (`--replay`, ci.reproduce).

    {"format": "sgl-ci-replay", "version": 1, "command": "nox -s stage_c -- --replay ci-reports/…",
     "created": "…Z", "run": {"stage": "stage-c", "label": "stage-c-…-2of4", "session": "stage_c", "url": ""},
     "toolkit": {"commit": "<sha>|unknown", "version": "0.1.0"}, "tree": {"commit": "…", "test_root": "test/registered"},
     "arch": {"name": "mi300", "product": "MI300X", "gfx": "gfx942"},
     "image": {"name": "rocm/sgl-dev:TAG", "digest": "sha256:…", "rocm": "rocm700"},
     "settings": {"retries": 1, "continue_on_error": false, "kill_grace_s": 10, "stage_timeout_s": 7200},
     "jobs": [{"suite": "…", "gpus": 8, "variant": "default", "partitions": 4, "partition": 2,
               "per_file_timeout_s": 3600, "timeout_minutes": 120}],
     "units": [{"name": "amd/test_x.py", "suite": "…", "partition": 2, "style": "unittest", "est_time": 600,
                "seconds": 612, "timeout_s": 3600, "status": "failed"}],   # + selectors, argv, cwd, env
     "known_issues": [{"test": "…", "arches": ["mi300"], "mode": "skip", "reason": "…", "link": "…", "expires": "…"}],
     "thresholds": [{"test": "…", "metric": "…", "kind": "min", "unit": "tok/s", "by": null,
                     "default": 2000, "in_force": 900, "source": "mi300"}],
     "env": {"SGLANG_IS_IN_CI": "1", …}}

Units are in the order they ran. `env` is what the test processes get (container env, exec env,
arch env), never a secret: names in container.secret_env and the registry login are left out,
and so is any value equal to a secret's. A bound keyed by a parameter is a list of [key, value]."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import requests

from ci import github
from ci.config import ARCH_ENV, EMPTY, ArchSpec, BoundValue, Config, KnownIssue, ReplayConfig
from ci.container import TOOLKIT
from ci.errors import UserError
from ci.images import parse_image_name
from ci.known_issues import touching
from ci.login import CREDENTIALS_ENV
from ci.runner import FileResult, FileStatus, RunPlan
from ci.secrets import SECRET_ENV

FORMAT = "sgl-ci-replay"
VERSION = 1
FILE = "replay.json"
UNKNOWN = "unknown"  # a commit that could not be read (not a git checkout, no git, too slow)
PACKAGE = "sglang-amd-ci"  # the toolkit's distribution name, for its version when it is not a checkout
PROPERTY = "sgl-ci.replay"  # prefix of the JUnit properties
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


# A unit's outcome in the report: the runner's verdicts but disabled (a disabled file is no unit).
UNIT_OUTCOMES = tuple(v for v in FileStatus if v is not FileStatus.DISABLED)
OUTCOMES = frozenset(v.value for v in UNIT_OUTCOMES)
# What `--failed` replays: a failure, a timeout, and a pass that needed a retry (the retry hid a
# failure; reproducing it is the point). Units that never ran did not fail.
FAILED = (FileStatus.FAILED, FileStatus.TIMEOUT, FileStatus.FLAKY)


class RecordError(UserError):
    """A replay record that cannot be had or read: one line naming it, exit code 2."""


@dataclass(frozen=True)
class Commit:
    commit: str  # 40 (or 64) hex digits, or "unknown"
    version: str = ""  # the toolkit's installed version; "" for the test tree

    @property
    def shown(self) -> str:
        if self.commit != UNKNOWN:
            return self.commit[:12]
        return f"unknown (version {self.version})" if self.version else UNKNOWN


@dataclass(frozen=True)
class ReplayJob:
    suite: str
    gpus: int
    variant: str
    partitions: int
    partition: int | None  # 1-based; None: every partition ran
    per_file_timeout_s: float
    timeout_minutes: float


@dataclass(frozen=True)
class ReplayUnit:
    name: str  # a file under the test root, a shard `file::A+B`, or a command's name
    suite: str
    partition: int
    style: str  # as it ran: unittest | pytest | command
    est_time: float
    seconds: float  # the estimate it was partitioned by
    timeout_s: float  # the timeout it ran under
    status: FileStatus  # one of UNIT_OUTCOMES
    selectors: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    cwd: str = ""  # commands: relative to the workspace
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY)

    @property
    def file(self) -> str:
        return self.name.split("::", 1)[0] if self.selectors else self.name


@dataclass(frozen=True)
class Threshold:
    """One performance bound as it was in force on the run's arch."""

    test: str
    metric: str
    kind: str
    unit: str
    by: str | None
    default: BoundValue
    in_force: BoundValue
    source: str  # the arch's own entry, "amd" or "default"


@dataclass(frozen=True)
class Record:
    stage: str
    label: str  # the partition's name, as the report folder and the JUnit suite are named
    session: str  # nox -s <session>
    run_url: str  # the Actions run, when it ran in Actions
    created: str
    toolkit: Commit
    tree: Commit
    test_root: str  # relative to the workspace
    arch: str
    product: str
    gfx: str
    image: str  # [registry/]repository:tag as pulled; "" when nothing ran
    digest: str  # sha256:…; "" when unknown
    rocm: str
    retries: int
    continue_on_error: bool
    kill_grace_s: float
    stage_timeout_s: float
    jobs: tuple[ReplayJob, ...]
    units: tuple[ReplayUnit, ...]
    known_issues: tuple[KnownIssue, ...]
    thresholds: tuple[Threshold, ...]
    env: Mapping[str, str]
    command: str

    @property
    def gpus(self) -> int:
        return max((j.gpus for j in self.jobs), default=0)


# --- what is recorded ------------------------------------------------------------------------
def git_commit(path: Path, timeout_s: float) -> str:
    """HEAD of the git checkout whose top is `path` (argv, no shell); "unknown" for anything else:
    no git, not a checkout, a folder inside another checkout, no commit yet, too slow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # GIT_DIR would name another repo
    try:
        done = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                              text=True, timeout=timeout_s, check=False, env=env, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    lines = done.stdout.split("\n")
    if done.returncode != 0 or len(lines) < 2:
        return UNKNOWN
    try:
        same = Path(lines[0]).resolve() == path.resolve()
    except OSError:
        return UNKNOWN
    return lines[1] if same and COMMIT.fullmatch(lines[1]) else UNKNOWN


def toolkit_commit(toolkit: Path, timeout_s: float) -> Commit:
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = ""
    return Commit(git_commit(toolkit, timeout_s), version)


def secret_names(config: Config) -> frozenset[str]:
    """What is secret: the toolkit's secrets, the container's secret env and the registry login."""
    return frozenset((*SECRET_ENV, *config.container.secret_env, *CREDENTIALS_ENV))


def test_env(config: Config, arch: ArchSpec, env: Mapping[str, str]) -> dict[str, str]:
    """The environment the test processes get from config (container env, then the exec env, then
    the arch's), without any secret: not by name, not by value."""
    secret = secret_names(config)
    hidden = {env[name] for name in secret if env.get(name)}
    merged = {**config.container.base_env, **config.container.exec.env, **arch.env, ARCH_ENV: arch.name}
    return {k: v for k, v in sorted(merged.items()) if k not in secret and v not in hidden}


def thresholds_in_force(config: Config, arch: str) -> tuple[Threshold, ...]:
    """Every bound of config as the container resolves it on this arch (its entry, else amd, else default)."""
    found = []
    for test, metrics in config.thresholds.items():
        for metric, spec in metrics.items():
            if arch in spec.arch:
                value, source = spec.arch[arch], arch
            elif spec.amd is not None:
                value, source = spec.amd, "amd"
            else:
                value, source = spec.default, "default"
            found.append(Threshold(test, metric, spec.kind, spec.unit, spec.by, spec.default, value, source))
    return tuple(found)


def command_line(config: Config, session: str, report_dir: Path, workspace: Path, label: str,
                 env: Mapping[str, str]) -> str:
    """The copy-pasteable command that replays this report: config's report URL when set; in
    Actions the folder relative to the workspace (where a downloaded report folder goes); else
    the folder's absolute path."""
    template = config.replay.report_url
    if template:
        where = template.format(server=env.get("GITHUB_SERVER_URL", ""), repository=env.get("GITHUB_REPOSITORY", ""),
                                run_id=env.get("GITHUB_RUN_ID", ""), attempt=env.get("GITHUB_RUN_ATTEMPT", "1"),
                                label=label)
    else:
        where = str(report_dir.resolve())
        if github.in_actions(env):
            try:
                where = report_dir.resolve().relative_to(workspace.resolve()).as_posix()
            except ValueError:
                pass
    return f"nox -s {session} -- --replay {shlex.quote(where)}"


def build_record(config: Config, plan, run_plan: RunPlan, results: Sequence[FileResult], outcome,
                 workspace: Path, report_dir: Path, env: Mapping[str, str], now: dt.datetime,
                 toolkit: Path = TOOLKIT) -> Record:
    """The record of a stage run (`plan` a ci.plan.StagePlan, `outcome` its ci.pull.PullOutcome or
    None when nothing was pulled). Units in the order the runner got them."""
    arch = plan.resolution.arch
    jobs, planned = [], []
    for job in plan.jobs:
        numbers = range(1, job.total + 1) if job.selected is None else (job.selected,)
        jobs.append(ReplayJob(job.job.suite, job.job.gpus, job.job.variant, job.total, job.selected,
                              job.per_file_timeout_s, job.job.timeout_for(arch.name)))
        planned += [(job, number, unit) for number in numbers for unit in job.part(number)]
    # The runner reports in plan order; a command run in every partition has one name, so by position.
    statuses = [r.status for r in results]
    if [r.path for r in results] != [unit.name for _, _, unit in planned]:
        by_name = {r.path: r.status for r in results}
        statuses = [by_name.get(unit.name, FileStatus.NOT_RUN) for _, _, unit in planned]
    units = []
    for (job, number, unit), found in zip(planned, statuses):
        command = unit.style == "command"
        style = "pytest" if not command and touching(config.known_issues, unit.file, arch.name) else unit.style
        units.append(ReplayUnit(
            unit.name, job.job.suite, number, style, unit.est_time, unit.seconds,
            job.per_file_timeout_s if command else (unit.timeout_s or job.per_file_timeout_s),
            found if found in UNIT_OUTCOMES else FileStatus.NOT_RUN,
            unit.selectors, unit.argv, unit.cwd, MappingProxyType(dict(unit.env))))
    session = plan.stage.name.replace("-", "_")
    try:
        test_root = plan.test_root.resolve().relative_to(workspace.resolve()).as_posix()
    except ValueError:
        test_root = str(plan.test_root)
    image, digest = "", ""
    if outcome is not None:
        image, digest = str(outcome.image.plain), outcome.digest or ""
    run_url = ""
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        run_url = (f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}/actions/runs/"
                   f"{env['GITHUB_RUN_ID']}")
    return Record(
        stage=plan.stage.name, label=run_plan.stage, session=session, run_url=run_url,
        created=now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        toolkit=toolkit_commit(toolkit, config.replay.git_timeout_s),
        tree=Commit(git_commit(workspace, config.replay.git_timeout_s)), test_root=test_root,
        arch=arch.name, product=arch.product, gfx=arch.gfx, image=image, digest=digest,
        rocm=plan.rocm or config.images.rocm, retries=run_plan.retries, continue_on_error=run_plan.continue_on_error,
        kill_grace_s=run_plan.kill_grace_s, stage_timeout_s=run_plan.stage_timeout_s,
        jobs=tuple(jobs), units=tuple(units),
        known_issues=tuple(i for i in config.known_issues if arch.name in i.arches),
        thresholds=thresholds_in_force(config, arch.name),
        env=MappingProxyType(test_env(config, arch, env)),
        command=command_line(config, session, report_dir, workspace, run_plan.stage, env),
    )


# --- writing ---------------------------------------------------------------------------------
def _bound_json(value: BoundValue) -> Any:
    return [[k, float(v)] for k, v in value.items()] if isinstance(value, Mapping) else float(value)


def record_data(record: Record) -> dict:
    def unit(u: ReplayUnit) -> dict:
        data = {"name": u.name, "suite": u.suite, "partition": u.partition, "style": u.style, "est_time": u.est_time,
                "seconds": u.seconds, "timeout_s": u.timeout_s, "status": u.status.value}
        for key, value in (("selectors", list(u.selectors)), ("argv", list(u.argv)), ("cwd", u.cwd), ("env", dict(u.env))):
            if value:
                data[key] = value
        return data

    return {
        "format": FORMAT, "version": VERSION, "command": record.command, "created": record.created,
        "run": {"stage": record.stage, "label": record.label, "session": record.session, "url": record.run_url},
        "toolkit": {"commit": record.toolkit.commit, "version": record.toolkit.version},
        "tree": {"commit": record.tree.commit, "test_root": record.test_root},
        "arch": {"name": record.arch, "product": record.product, "gfx": record.gfx},
        "image": {"name": record.image, "digest": record.digest, "rocm": record.rocm},
        "settings": {"retries": record.retries, "continue_on_error": record.continue_on_error,
                     "kill_grace_s": record.kill_grace_s, "stage_timeout_s": record.stage_timeout_s},
        "jobs": [{"suite": j.suite, "gpus": j.gpus, "variant": j.variant, "partitions": j.partitions,
                  "partition": j.partition, "per_file_timeout_s": j.per_file_timeout_s,
                  "timeout_minutes": j.timeout_minutes} for j in record.jobs],
        "units": [unit(u) for u in record.units],
        "known_issues": [{"test": i.test, "arches": list(i.arches), "mode": i.mode, "reason": i.reason, "link": i.link,
                          "expires": i.expires.isoformat() if i.expires else None} for i in record.known_issues],
        "thresholds": [{"test": t.test, "metric": t.metric, "kind": t.kind, "unit": t.unit, "by": t.by,
                        "default": _bound_json(t.default), "in_force": _bound_json(t.in_force), "source": t.source}
                       for t in record.thresholds],
        "env": dict(record.env),
    }


def record_json(record: Record) -> str:
    return json.dumps(record_data(record), indent=1) + "\n"


def junit_properties(record: Record) -> list[tuple[str, str]]:
    """The record as JUnit properties (the stage puts them in its junit.xml): scalars by dotted name, each list item as compact JSON under
    its 1-based index (`sgl-ci.replay.units.3`), env one property per variable."""
    found: list[tuple[str, str]] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{name}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value, 1):
                found.append((f"{name}.{index}", json.dumps(item, separators=(",", ":"))))
        else:
            found.append((name, "" if value is None else json.dumps(value) if not isinstance(value, str) else value))

    walk(record_data(record), PROPERTY)
    return found


def summary_markdown(record: Record) -> str:
    """The end of the job's summary: the one line that replays it."""
    return f"\n### Replay\n\nOn a local box, the same units in the same image and settings: `{record.command}`\n"


# --- reading (every problem is one RecordError line naming the file and the field) ------------
class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> RecordError:
        return RecordError(f"{self.source}: {where}: {message}")

    def obj(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        return value

    def items(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return value

    def text(self, data: dict, key: str, where: str, empty: bool = True) -> str:
        value = data.get(key)
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(f"{where}.{key}", f"expected {'a' if empty else 'a non-empty'} string, got {_shown(value)}")
        return value

    def number(self, data: dict, key: str, where: str, positive: bool = False) -> float:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (positive and value == 0):
            raise self.fail(f"{where}.{key}", f"expected a number {'> 0' if positive else '>= 0'}, got {_shown(value)}")
        return float(value)

    def integer(self, data: dict, key: str, where: str, least: int = 0) -> int:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise self.fail(f"{where}.{key}", f"expected a whole number >= {least}, got {_shown(value)}")
        return value

    def integer_or_null(self, data: dict, key: str, where: str, least: int = 0) -> int | None:
        if data.get(key) is None:
            return None
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise self.fail(f"{where}.{key}", f"expected a whole number >= {least} or null, got {_shown(value)}")
        return value

    def flag(self, data: dict, key: str, where: str) -> bool:
        value = data.get(key)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"expected true or false, got {_shown(value)}")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        items = self.items(value, where)
        if not all(isinstance(i, str) for i in items):
            raise self.fail(where, "expected a list of strings")
        return tuple(items)

    def env(self, value: Any, where: str) -> Mapping[str, str]:
        data = self.obj(value, where)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise self.fail(where, "expected an object of strings")
        return MappingProxyType(dict(data))

    def bound(self, value: Any, where: str) -> BoundValue:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        pairs = self.items(value, where)
        out: dict = {}
        for pair in pairs:
            if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], (int, str))
                    or isinstance(pair[0], bool) or isinstance(pair[1], bool) or not isinstance(pair[1], (int, float))):
                raise self.fail(where, "expected a number or a list of [key, number]")
            out[pair[0]] = float(pair[1])
        return MappingProxyType(out)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_record(text: str, source: str) -> Record:
    """A record from its JSON text; a foreign, newer or malformed file is one RecordError."""
    try:
        data = json.loads(text, parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RecordError(f"{source}: not JSON ({getattr(exc, 'msg', 'too deeply nested')}); "
                          f"expected a replay record ({FILE} from a stage's report folder)") from None
    read = _Reader(source)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise RecordError(f"{source}: not a replay record (format {found!r}; expected {FORMAT!r}, the {FILE} of a "
                          f"stage's report folder)")
    if data.get("version") != VERSION:
        raise RecordError(f"{source}: replay record version {data.get('version')!r}; this toolkit reads version {VERSION}")
    run = read.obj(data.get("run"), "run")
    toolkit = read.obj(data.get("toolkit"), "toolkit")
    tree = read.obj(data.get("tree"), "tree")
    arch = read.obj(data.get("arch"), "arch")
    image = read.obj(data.get("image"), "image")
    settings = read.obj(data.get("settings"), "settings")
    commits = []
    for where, part in (("toolkit", toolkit), ("tree", tree)):
        commit = read.text(part, "commit", where, empty=False)
        if commit != UNKNOWN and not COMMIT.fullmatch(commit):
            raise read.fail(f"{where}.commit", f"expected a commit (hex) or {UNKNOWN!r}, got {_shown(commit)}")
        commits.append(commit)
    name, digest = read.text(image, "name", "image"), read.text(image, "digest", "image")
    if name:
        try:
            parse_image_name(name)  # a name without a tag is refused there: a CI image is named by its tag
        except UserError as exc:
            raise read.fail("image.name", str(exc)) from None
    if digest and not DIGEST.fullmatch(digest):
        raise read.fail("image.digest", f"expected sha256: and 64 hex digits, or \"\", got {_shown(digest)}")
    jobs = []
    for index, job in enumerate(read.items(data.get("jobs"), "jobs")):
        where = f"jobs[{index}]"
        job = read.obj(job, where)
        partitions = read.integer(job, "partitions", where, 1)
        partition = read.integer_or_null(job, "partition", where, 1)
        if partition is not None and partition > partitions:
            raise read.fail(f"{where}.partition", f"{partition} of {partitions} partition(s)")
        jobs.append(ReplayJob(read.text(job, "suite", where, empty=False), read.integer(job, "gpus", where, 1),
                              read.text(job, "variant", where, empty=False), partitions, partition,
                              read.number(job, "per_file_timeout_s", where, positive=True),
                              read.number(job, "timeout_minutes", where, positive=True)))
    suites = {j.suite: j for j in jobs}
    units = []
    for index, unit in enumerate(read.items(data.get("units"), "units")):
        where = f"units[{index}]"
        unit = read.obj(unit, where)
        suite = read.text(unit, "suite", where, empty=False)
        if suite not in suites:
            raise read.fail(f"{where}.suite", f"{_shown(suite)} is none of the record's jobs ({', '.join(suites)})")
        style = read.text(unit, "style", where)
        if style not in ("unittest", "pytest", "command"):
            raise read.fail(f"{where}.style", f"{_shown(style)} (allowed: unittest, pytest, command)")
        status = unit.get("status")
        if status not in OUTCOMES:
            raise read.fail(f"{where}.status", f"{_shown(status)} (allowed: {', '.join(o.value for o in UNIT_OUTCOMES)})")
        argv = read.strings(unit.get("argv", []), f"{where}.argv")
        if style == "command" and not argv:
            raise read.fail(f"{where}.argv", "a command needs its argv")
        partition = read.integer(unit, "partition", where, 1)
        if partition > suites[suite].partitions:
            raise read.fail(f"{where}.partition", f"{partition} of {suites[suite].partitions} partition(s)")
        units.append(ReplayUnit(read.text(unit, "name", where, empty=False), suite, partition, style,
                                read.number(unit, "est_time", where), read.number(unit, "seconds", where),
                                read.number(unit, "timeout_s", where, positive=True), FileStatus(status),
                                read.strings(unit.get("selectors", []), f"{where}.selectors"), argv,
                                read.text({"cwd": unit.get("cwd", "")}, "cwd", where),
                                read.env(unit.get("env", {}), f"{where}.env")))
    keys = [(u.suite, u.partition, u.name) for u in units]  # a command of every partition: once in each
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise read.fail("units", f"{twice[2]!r} is listed twice in partition {twice[1]} of {twice[0]}")
    issues = []
    for index, issue in enumerate(read.items(data.get("known_issues"), "known_issues")):
        where = f"known_issues[{index}]"
        issue = read.obj(issue, where)
        mode = issue.get("mode")
        if mode != "skip" and mode != "xfail":
            raise read.fail(f"{where}.mode", f"{_shown(mode)} (allowed: skip, xfail)")
        expires = issue.get("expires")
        if expires is not None:
            try:
                expires = dt.date.fromisoformat(expires) if isinstance(expires, str) else None
            except ValueError:
                expires = None
            if expires is None:
                raise read.fail(f"{where}.expires", f"expected a date (YYYY-MM-DD) or null, got {_shown(issue.get('expires'))}")
        issues.append(KnownIssue(read.text(issue, "test", where, empty=False), read.strings(issue.get("arches"), f"{where}.arches"),
                                 mode, read.text(issue, "reason", where), read.text(issue, "link", where), expires))
    thresholds = []
    for index, bound in enumerate(read.items(data.get("thresholds"), "thresholds")):
        where = f"thresholds[{index}]"
        bound = read.obj(bound, where)
        kind = read.text(bound, "kind", where)
        if kind not in ("min", "max"):
            raise read.fail(f"{where}.kind", f"{_shown(kind)} (allowed: min, max)")
        by = bound.get("by")
        if by is not None and not isinstance(by, str):
            raise read.fail(f"{where}.by", f"expected a string or null, got {_shown(by)}")
        thresholds.append(Threshold(read.text(bound, "test", where, empty=False), read.text(bound, "metric", where, empty=False),
                                    kind, read.text(bound, "unit", where), by,
                                    read.bound(bound.get("default"), f"{where}.default"),
                                    read.bound(bound.get("in_force"), f"{where}.in_force"),
                                    read.text(bound, "source", where, empty=False)))
    return Record(
        stage=read.text(run, "stage", "run", empty=False), label=read.text(run, "label", "run", empty=False),
        session=read.text(run, "session", "run", empty=False), run_url=read.text(run, "url", "run"),
        created=read.text(data, "created", "(top level)"),
        toolkit=Commit(commits[0], read.text(toolkit, "version", "toolkit")), tree=Commit(commits[1]),
        test_root=read.text(tree, "test_root", "tree", empty=False),
        arch=read.text(arch, "name", "arch", empty=False), product=read.text(arch, "product", "arch"),
        gfx=read.text(arch, "gfx", "arch"), image=name, digest=digest, rocm=read.text(image, "rocm", "image"),
        retries=read.integer(settings, "retries", "settings"),
        continue_on_error=read.flag(settings, "continue_on_error", "settings"),
        kill_grace_s=read.number(settings, "kill_grace_s", "settings"),
        stage_timeout_s=read.number(settings, "stage_timeout_s", "settings", positive=True),
        jobs=tuple(jobs), units=tuple(units), known_issues=tuple(issues), thresholds=tuple(thresholds),
        env=read.env(data.get("env"), "env"), command=read.text(data, "command", "(top level)"),
    )


# --- finding it: a path, a report folder, or an http(s) URL -----------------------------------
def load(given: str, workspace: Path, config: ReplayConfig) -> tuple[Record, str]:
    """(record, where it was read) from what --replay named. Relative paths are under the workspace."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", given):
        if not given.lower().startswith(("http://", "https://")):
            raise RecordError(f"--replay {given}: not a path or an http(s) URL (allowed: a report folder, its {FILE}, "
                              "or an http(s) URL of either)")
        url = given if PurePosixPath(given.split("?", 1)[0]).name.endswith(".json") else given.rstrip("/") + "/" + FILE
        return parse_record(_fetch(url, config), url), url
    path = workspace / given
    if path.is_dir():
        path = path / FILE
        if not path.is_file():
            raise RecordError(f"--replay {given}: no {FILE} in the folder {path.parent} (a stage's report folder "
                              f"holds one: junit.xml, summary.md and {FILE})")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"--replay {given}: no such file or folder ({path}); allowed: a report folder, its {FILE}, "
                          "or an http(s) URL of either") from None
    except OSError as exc:
        raise RecordError(f"--replay {given}: cannot read {path}: {exc.strerror}") from None
    return parse_record(_decode(raw, str(path), config.max_record_bytes), str(path)), str(path)


def _decode(raw: bytes, source: str, limit: int) -> str:
    if len(raw) > limit:
        raise RecordError(f"{source}: {len(raw)} bytes, over the {limit} a replay record may have (replay.max_record_bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{source}: not UTF-8 text; expected a replay record ({FILE})") from None


def _fetch(url: str, config: ReplayConfig) -> str:
    timeout = config.fetch_timeout_s
    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
            if response.status_code != 200:
                raise RecordError(f"--replay {url}: HTTP {response.status_code} {response.reason or ''}".rstrip()
                                  + f" (allowed: a URL that serves a report's {FILE}, or its folder)")
            body = b""
            for chunk in response.iter_content(65536):
                body += chunk
                if len(body) > config.max_record_bytes:
                    break
    except requests.Timeout:
        raise RecordError(f"--replay {url}: no answer within {timeout:g} s (replay.fetch_timeout_s)") from None
    except requests.ConnectionError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else exc.__class__.__name__
        raise RecordError(f"--replay {url}: cannot connect ({reason})") from None
    except requests.RequestException as exc:
        raise RecordError(f"--replay {url}: {exc.__class__.__name__}") from None
    return _decode(body, url, config.max_record_bytes)
