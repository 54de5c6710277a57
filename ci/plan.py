"""What a stage run would do, as a value (pure): arch, images, and for each job its units (files
and commands), estimates, partition count, partitions and budgets. --dry-run prints it; a budget
that cannot hold its work fails the plan before anything runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ci.arch import ArchResolution
from ci.config import AUTO, EMPTY, ArchSpec, Config, StageSpec, SuiteJob
from ci.errors import UserError
from ci.images import (
    ImageName,
    candidate_images,
    check_rocm,
    discovered_candidates,
    parse_image_name,
    tag_shape,
)
from ci.partition import Item, Partitioning, partition
from ci.routing import JobRoute, job_route
from ci.suites import RegisteredFile, TreeCheck, TreeProblems, TreeScan, check_tree, scan_tree, select


class BudgetProblems(UserError):
    """Budgets that cannot hold their work, one line each: printed whole, exit code 2."""

    multiline = True

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join([f"{len(problems)} budget problem(s):", *(f"  {p}" for p in problems)]))


@dataclass(frozen=True)
class Unit:
    """What the runner runs once: a registered file, or a command from suites.yaml."""

    name: str  # the file's path under the test root, or the command's name
    seconds: float  # the estimate partitioning uses (recorded duration when known)
    est_time: float
    style: str  # unittest | pytest | command
    argv: tuple[str, ...] = ()
    cwd: str = ""  # commands: relative to the workspace
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY, repr=False)
    every_partition: bool = False
    only_partition: int | None = None
    recorded: bool = False


def _filled(unit: Unit, number: int, total: int) -> Unit:
    """An every-partition command with {partition} (0-based) and {partitions} filled in."""
    if not unit.every_partition:
        return unit
    argv = tuple(a.replace("{partitions}", str(total)).replace("{partition}", str(number - 1)) for a in unit.argv)
    return dataclasses.replace(unit, argv=argv)


@dataclass(frozen=True)
class JobPlan:
    route: JobRoute
    job: SuiteJob
    partitioning: Partitioning  # of the freely placed units
    units: Mapping[str, Unit]
    disabled: tuple[RegisteredFile, ...]
    per_file_timeout_s: float
    budget_s: float
    auto: bool
    selected: int | None = None  # 1-based partition to run; None: all

    @property
    def total(self) -> int:
        return len(self.partitioning.parts)

    def part(self, number: int) -> list[Unit]:
        """The units of partition `number` (1-based), pinned and every-partition units included."""
        free = [self.units[item.name] for item in self.partitioning.parts[number - 1]]
        fixed = [_filled(u, number, self.total) for u in self.units.values()
                 if u.every_partition or u.only_partition == number]
        return free + fixed

    def loads(self) -> list[float]:
        return [sum(u.seconds for u in self.part(n)) for n in range(1, self.total + 1)]

    @property
    def makespan(self) -> float:
        return max(self.loads(), default=0.0)

    def units_to_run(self) -> list[Unit]:
        numbers = range(1, self.total + 1) if self.selected is None else (self.selected,)
        return [u for n in numbers for u in self.part(n)]


@dataclass(frozen=True)
class StagePlan:
    stage: StageSpec
    resolution: ArchResolution
    images: tuple[ImageName, ...]  # candidates newest first, the one override, or none yet (pull time)
    image_overridden: bool
    image_source: str  # override | versions (config's override) | tag-list (given) | pull-time
    image_shape: str  # what discovery looks for: rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD>
    versions_override: tuple[str, ...]
    lookback_days: int
    lan_registry: str | None
    public_registry: str
    test_root: Path
    jobs: tuple[JobPlan, ...]
    warnings: tuple[str, ...] = ()
    recorded: int = 0  # units that took a recorded duration
    durations_given: bool = False
    rocm: str | None = None  # the --rocm the candidates were built for, so the pull uses the same

    @property
    def timeout_minutes(self) -> float:
        """What the selected work may take: the sum of its jobs' budgets."""
        return sum(j.job.timeout_for(self.resolution.arch.name) for j in self.jobs)


# --- units and estimates ------------------------------------------------------------------------
def _units(config: Config, job: SuiteJob, arch: str, files: Sequence[RegisteredFile],
           recorded: Mapping[str, float]) -> dict[str, Unit]:
    overrides = config.suites.est_time_overrides.get(arch, EMPTY)
    units: dict[str, Unit] = {}

    def estimate(name: str, est: float) -> tuple[float, bool]:
        return (recorded[name], True) if name in recorded else (float(overrides.get(name, est)), False)

    for f in files:
        seconds, was_recorded = estimate(f.path, f.est_time)
        units[f.path] = Unit(f.path, seconds, f.est_time, f.style, recorded=was_recorded)
    for listed in config.suites.files.get(job.suite, ()):
        seconds, was_recorded = estimate(listed.path, listed.est_time)
        units[listed.path] = Unit(listed.path, seconds, listed.est_time, "unittest", recorded=was_recorded)
    for command in config.suites.commands.get(job.suite, ()):
        seconds, was_recorded = estimate(command.name, command.est_time)
        units[command.name] = Unit(command.name, seconds, command.est_time, "command", command.argv, command.cwd,
                                   command.env, command.every_partition, command.only_partition, was_recorded)
    return units


def _split(units: Mapping[str, Unit], count: int) -> Partitioning:
    free = [Item(u.name, u.seconds) for u in units.values() if not u.every_partition and u.only_partition is None]
    return partition(free, count)


def _fits(units: Mapping[str, Unit], count: int, budget_s: float) -> tuple[bool, Partitioning]:
    parts = _split(units, count)
    fixed_every = sum(u.seconds for u in units.values() if u.every_partition)
    loads = [total + fixed_every for total in parts.totals]
    for u in units.values():
        if u.only_partition is not None and u.only_partition <= count:
            loads[u.only_partition - 1] += u.seconds
    return max(loads, default=0.0) <= budget_s, parts


def smallest_fitting_count(units: Mapping[str, Unit], budget_s: float, most: int) -> int | None:
    """The smallest partition count (1..most) whose makespan fits the budget; None if none does."""
    free = [u.seconds for u in units.values() if not u.every_partition and u.only_partition is None]
    start = max(1, math.ceil(sum(free) / budget_s)) if budget_s > 0 else 1
    for count in range(min(start, most), most + 1):
        if _fits(units, count, budget_s)[0]:
            return count
    return None


def plan_job(config: Config, stage: StageSpec, job: SuiteJob, arch: ArchSpec, files: Sequence[RegisteredFile],
             disabled: Sequence[RegisteredFile], recorded: Mapping[str, float], problems: list[str]) -> JobPlan:
    """One job's partitions and its budget checks (problems are appended, one line each)."""
    units = _units(config, job, arch.name, files, recorded)
    per_file = job.per_file_timeout_for(arch.name)
    budget = stage.budget_share * job.timeout_for(arch.name) * 60
    label = f"{job.suite} on {arch.name}"
    for unit in units.values():
        if unit.seconds > per_file:
            problems.append(f"{label}: {unit.name} is estimated at {unit.seconds:g} s, over the per-file timeout of "
                            f"{per_file:g} s (raise per_file_timeout_s or fix the estimate)")
    pinned = [u for u in units.values() if u.only_partition is not None]
    auto = job.partitions == AUTO
    if auto:
        count = smallest_fitting_count(units, budget, stage.max_partitions)
        if count is None:
            problems.append(f"{label}: no partition count up to max_partitions {stage.max_partitions} fits the budget "
                            f"of {budget:.0f} s ({stage.budget_share:g} of {job.timeout_for(arch.name):g} min)")
            count = 0
    else:
        count = int(job.partitions)
    free = [u for u in units.values() if not u.every_partition and u.only_partition is None]
    every = [u for u in units.values() if u.every_partition]
    if count == 0:  # nothing fits: said above; plan one partition so the rest can be reported
        count = 1
    elif not every and len(free) + len(pinned) < count and units:
        problems.append(f"{label}: {count} partitions but only {len(free) + len(pinned)} unit(s): "
                        f"partitions would be empty (lower `partitions`, or use auto)")
    for u in pinned:
        if u.only_partition > count:
            problems.append(f"{label}: {u.name} is pinned to partition {u.only_partition} of {count}")
    fits, parts = _fits(units, count, budget)
    plan = JobPlan(job_route(stage, job, arch, count), job, parts, MappingProxyType(units), tuple(disabled), per_file,
                   budget, auto)
    if not fits and not auto:
        best = smallest_fitting_count(units, budget, stage.max_partitions)
        hint = f"the smallest count that fits is {best}" if best else f"no count up to {stage.max_partitions} fits"
        problems.append(f"{label}: makespan {plan.makespan:.0f} s over {count} partition(s) exceeds the budget of "
                        f"{budget:.0f} s ({stage.budget_share:g} of {job.timeout_for(arch.name):g} min); {hint} "
                        f"(or set partitions: auto)")
    return plan


# --- the stage plan ----------------------------------------------------------------------------
def load_tree(config: Config, test_root: Path) -> tuple[TreeScan, TreeCheck]:
    """Scan and check the test tree once; every problem at once, or a clean scan."""
    if not test_root.is_dir():
        raise UserError(f"test root {test_root} is not a directory (set GITHUB_WORKSPACE to the SGLang checkout, "
                        f"or --test-root; config suites.test_root is relative to the workspace)")
    scan = scan_tree(test_root, config)
    check = check_tree(scan, config)
    if check.problems:
        raise TreeProblems(check.problems, f"the test tree {test_root}")
    return scan, check


def build_plan(
    config: Config,
    stage: str,
    resolution: ArchResolution,
    today: dt.date,
    tree: tuple[TreeScan, TreeCheck],
    image: str | None = None,
    rocm: str | None = None,
    suite: str | None = None,
    partition_arg: tuple[int, int] | None = None,
    recorded: Mapping[str, float] | None = None,
    tags: Sequence[str] | None = None,
) -> StagePlan:
    """The plan as a value, with no network: candidates from the image override, the versions
    override in config, or a tag list passed in; else only their shape (discovered at pull time)."""
    spec = config.stage(stage)
    arch = resolution.arch
    scan, check = tree
    jobs = spec.jobs_for(arch.name)
    if suite is not None:
        spec.job(suite)  # unknown suite: a clear error
        jobs = tuple(j for j in jobs if j.suite == suite)
        if not jobs:
            raise UserError(f"suite {suite!r} does not run on {arch.name} (its arches: {', '.join(spec.job(suite).arches)})")
    if not jobs:
        raise UserError(f"{spec.name} has no job on {arch.name} (its jobs run on: "
                        f"{', '.join(sorted({a for j in spec.suites for a in j.arches}))})")
    if partition_arg and len(jobs) > 1:
        raise UserError(f"--partition needs --suite: {spec.name} has {len(jobs)} jobs on {arch.name} "
                        f"({', '.join(j.suite for j in jobs)})")
    recorded = normalize_durations(recorded or {}, config)
    problems: list[str] = []
    plans = []
    for job in jobs:
        run, disabled = select(scan.files, job.suite, spec.nightly)
        plans.append(plan_job(config, spec, job, arch, run, disabled, recorded, problems))
    if problems:
        raise BudgetProblems(problems)
    if partition_arg:
        index, total = partition_arg
        plan = plans[0]
        if total != plan.total:
            raise UserError(f"--partition {index}/{total}: {plan.job.suite} on {arch.name} has {plan.total} partition(s)"
                            + (" (partitions: auto)" if plan.auto else "") + f"; use i/{plan.total}")
        plans[0] = dataclasses.replace(plan, selected=index)
        if not plans[0].units_to_run():
            raise UserError(f"--partition {index}/{total}: partition {index} of {plan.job.suite} is empty")
    rocm = check_rocm(config.images, rocm)
    if image:
        images, source = (parse_image_name(image),), "override"
    elif config.images.versions:
        images, source = candidate_images(config.images, arch, today, rocm), "versions"
    elif tags is not None:
        images, source = discovered_candidates(config.images, arch, today, tags, rocm), "tag-list"
    else:
        images, source = (), "pull-time"
    return StagePlan(
        stage=spec, resolution=resolution, images=images, image_overridden=bool(image), image_source=source,
        image_shape=tag_shape(config.images, arch, rocm), versions_override=config.images.versions,
        lookback_days=config.images.lookback_days, lan_registry=config.images.registries.lan, public_registry=config.images.registries.public,
        test_root=scan.root, jobs=tuple(plans), warnings=check.warnings,
        recorded=sum(u.recorded for p in plans for u in p.units.values()), durations_given=bool(recorded),
        rocm=rocm,
    )


def normalize_durations(recorded: Mapping[str, float], config: Config) -> dict[str, float]:
    """Keys as paths under the test root, whether recorded as such, with the workspace's test root
    in front (test/registered/...), or as a container path (/sglang-checkout/test/registered/...)."""
    assert config.container is not None
    prefixes = [f"{config.container.workdir.rstrip('/')}/{config.suites.test_root.strip('/')}/",
                f"{config.suites.test_root.strip('/')}/", "./"]
    out = {}
    for key, value in recorded.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def render_plan(plan: StagePlan) -> list[str]:
    arch = plan.resolution.arch
    lines = [
        f"stage {plan.stage.name} on {arch.name} ({arch.product}, {arch.gfx}, image arch {arch.image_arch}): "
        f"{plan.stage.cadence}",
        f"  arch from: {plan.resolution.source}",
        f"  retries: {plan.stage.retries}; budget share: {plan.stage.budget_share:g} of each job's timeout",
        f"  registries: LAN {plan.lan_registry or '(none: LOCAL_DOCKER_REGISTRY unset)'}; public {plan.public_registry}",
        "  image: " + _image_line(plan),
    ]
    if plan.image_source in ("versions", "tag-list"):
        lines += [f"    {image}" for image in plan.images]
    lines += [f"  warning: {w}" for w in plan.warnings]
    if plan.durations_given:
        lines.append(f"  durations: {plan.recorded} unit(s) took recorded durations" if plan.recorded else
                     "  warning: no unit matched the durations file: est_time used throughout")
    for job in plan.jobs:
        route = job.route
        lines.append(f"  job {route.job_name}: {route.gpus} GPU(s), {job.total} partition(s)"
                     f"{' (auto)' if job.auto else ''}, {len(job.units)} unit(s), per-file timeout "
                     f"{job.per_file_timeout_s:g} s, step {job.job.timeout_for(arch.name):g} min, job timeout "
                     f"{route.timeout_minutes} min")
        lines.append(f"    makespan {job.makespan:.0f} s of a {job.budget_s:.0f} s budget; lower bound "
                     f"{job.partitioning.lower_bound:.0f} s (max of longest unit and total/N)")
        for number, load in enumerate(job.loads(), 1):
            chosen = " <- this run" if job.selected == number else ""
            units = job.part(number)
            lines.append(f"    partition {number}/{job.total}: {load:.0f} s, {len(units)} unit(s){chosen}")
            lines += [f"      {u.name} ({u.seconds:g} s{', recorded' if u.recorded else ''})" for u in units]
        lines += [f"    disabled: {f.path}: {f.disabled}" for f in job.disabled]
    return lines


def _image_line(plan: StagePlan) -> str:
    window = f"within {plan.lookback_days} day(s)"
    if plan.image_source == "override":
        return f"override {plan.images[0]}"
    if plan.image_source == "versions":
        return (f"the newest that exists (local, then registry) of {len(plan.images)} candidates "
                f"from the versions override in config ({', '.join(plan.versions_override)}):")
    if plan.image_source == "tag-list":
        return f"newest first, {len(plan.images)} candidate(s) in the given tag list matching {plan.image_shape} {window}:"
    where = f"{plan.public_registry}'s tag list" + (f" (LAN mirror {plan.lan_registry}'s when it gives none)"
                                                    if plan.lan_registry else "")
    return (f"{plan.image_shape} {window}, newest date then version; discovered at pull time from {where}; "
            "versions override: none")
