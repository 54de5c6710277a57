"""What a stage run would do, as a value (pure): arch, images, and for each job its units (files
and commands), estimates, partition count, partitions and budgets. --dry-run prints it; a budget
that cannot hold its work fails the plan before anything runs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from ci.arch import ArchResolution
from ci.config import AUTO, EMPTY, ArchSpec, Config, StageSpec, SuiteJob
from ci.errors import UserError
from ci.gantt import partitions_chart
from ci.images import (
    ImageName,
    candidate_images,
    check_rocm,
    discovered_candidates,
    parse_image_name,
    tag_shape,
)
from ci.partition import Item, Partitioning, partition
from ci.routing import JobRoute, job_route, runner_label
from ci.shards import discover_file, plan_shards, shard_timeout
from ci.suites import (
    RegisteredFile,
    TreeCheck,
    TreeProblems,
    TreeScan,
    check_tree,
    scan_tree,
    select,
)

_Est = TypeVar("_Est", bound="float | None")  # an est_time: a float given, a float back; None only when none given


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
    # A shard of a long file (name `file::A+B`): the classes it runs, each one's estimate, its own timeout.
    selectors: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    timeout_s: float = 0.0  # 0: the job's per-file timeout

    @property
    def file(self) -> str:
        """The file it runs (a shard's file; the name itself otherwise)."""
        return self.name.split("::", 1)[0] if self.selectors else self.name


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
    cap: int = 0  # auto: the most partitions it may have (max_partitions, the label's runners)
    cap_why: str = ""
    notes: tuple[str, ...] = ()  # warnings of this job's plan (long files left whole, and why)

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


class ImageSource(str, Enum):
    """Where a plan's image candidates come from."""

    OVERRIDE = "override"  # --image or $AMD_CI_IMAGE
    VERSIONS = "versions"  # config's images.versions
    TAG_LIST = "tag-list"  # the registry's tag list, given to the plan
    PULL_TIME = "pull-time"  # none yet: discovered when the stage pulls

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StagePlan:
    stage: StageSpec
    resolution: ArchResolution
    images: tuple[ImageName, ...]  # candidates newest first, the one override, or none yet (pull time)
    image_overridden: bool
    image_source: ImageSource
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
           recorded: Mapping[str, float], root: Path | None = None, per_file_s: float = 0.0,
           notes: list[str] | None = None) -> dict[str, Unit]:
    """Every unit of the job with its estimate: measured (the store's quantile) when known, else the
    per-arch override or est_time, else the suite's mean. Files over the split threshold that hold
    several TestCase classes become shards of whole classes (when `root` is given)."""
    overrides = config.suites.est_time_overrides.get(arch, EMPTY)
    units: dict[str, Unit] = {}

    def estimate(name: str, est: _Est) -> tuple[float | _Est, bool]:
        if name in recorded:
            return recorded[name], True
        return (float(overrides[name]), False) if name in overrides else (est, False)

    for f in files:
        seconds, was_recorded = estimate(f.path, f.est_time)
        shards = _shards(config, f.path, f.style, float(seconds), recorded, root, per_file_s, notes)
        if shards:
            total = sum(u.seconds for u in shards)  # each shard's share of the file's est_time, for reports
            units.update((u.name, dataclasses.replace(u, est_time=f.est_time * u.seconds / total))
                         for u in shards)
        else:
            units[f.path] = Unit(f.path, float(seconds), f.est_time, f.style, recorded=was_recorded)
    unknown = []
    for listed in config.suites.files.get(job.suite, ()):
        estimated, was_recorded = estimate(listed.path, listed.est_time)
        if estimated is None:
            unknown.append(listed.path)
            continue
        units[listed.path] = Unit(listed.path, estimated, listed.est_time or estimated, "unittest", recorded=was_recorded)
    for command in config.suites.commands.get(job.suite, ()):
        seconds, was_recorded = estimate(command.name, command.est_time)
        units[command.name] = Unit(command.name, seconds, command.est_time, "command", command.argv, command.cwd,
                                   command.env, command.every_partition, command.only_partition, was_recorded)
    if unknown:  # no measurement and no est_time: the suite's mean, so it is placed, not ignored
        mean = sum(u.seconds for u in units.values()) / len(units) if units else 0.0
        for path in unknown:
            units[path] = Unit(path, mean, mean, "unittest")
            if notes is not None:
                notes.append(f"{path}: no est_time and no measurement; estimated at the suite's mean, {mean:.0f} s")
    return units


def _shards(config: Config, path: str, style: str, seconds: float, recorded: Mapping[str, float], root: Path | None,
            per_file_s: float, notes: list[str] | None) -> tuple[Unit, ...]:
    """A long file's shards, or () when it runs whole (said in `notes` when it is long)."""
    policy = config.durations.splitting
    if root is None:
        return ()
    measured = {k: v for k, v in recorded.items() if k.startswith(f"{path}::")}
    if seconds <= policy.split_above_s and sum(measured.values()) <= policy.split_above_s:
        return ()
    why = policy.unsplittable_reason(path)
    if why is None:
        file = root / path
        try:
            mtime = file.stat().st_mtime_ns
        except OSError:
            return ()
        workspace = root.parents[len(Path(config.suites.test_root).parts) - 1] if Path(config.suites.test_root).parts else root
        found = discover_file(file, mtime, style, tuple(policy.testcase_bases),
                              tuple(workspace / r for r in policy.import_roots), "")
        why = found.reason
    if why:
        if notes is not None:
            notes.append(f"{path} ({seconds:.0f} s) runs whole: {why}")
        return ()
    shards = plan_shards(path, found.classes, seconds, measured, policy.min_shard_s, policy.max_shards,
                         policy.shard_overhead_s)
    if not shards:
        return ()
    return tuple(Unit(s.name, s.seconds, 0.0, style, recorded=s.measured, selectors=s.classes, weights=s.weights,
                      timeout_s=shard_timeout(per_file_s, s.seconds, policy.timeout_factor, policy.timeout_slack_s)
                      if per_file_s else 0.0)
                 for s in shards)


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


def partition_cap(stage: StageSpec, job: SuiteJob, arch: ArchSpec) -> tuple[int, str]:
    """The most partitions `auto` may plan: the stage's max_partitions, and the runners behind the
    job's label (config arches.yaml pool.runners), whichever is smaller."""
    label = runner_label(arch, job.gpus, job.label_suffix)
    pool_gpus = min(n for n in arch.pool.gpu_counts if n >= job.gpus)
    runners = arch.pool.runners.get(pool_gpus)
    if runners is not None and runners < stage.max_partitions:
        return runners, f"{runners} runner(s) behind {label}"
    return stage.max_partitions, f"max_partitions {stage.max_partitions}" + (
        f" ({runners} runner(s) behind {label})" if runners is not None else "")


def plan_job(config: Config, stage: StageSpec, job: SuiteJob, arch: ArchSpec, files: Sequence[RegisteredFile],
             disabled: Sequence[RegisteredFile], recorded: Mapping[str, float], problems: list[str],
             root: Path | None = None) -> JobPlan:
    """One job's partitions and its budget checks (problems are appended, one line each). With the
    test root given, long files are split by test class (ci.shards)."""
    per_file = job.per_file_timeout_for(arch.name)
    notes: list[str] = []
    units = _units(config, job, arch.name, files, recorded, root, per_file, notes)
    budget = stage.budget_share * job.timeout_for(arch.name) * 60
    if any(u.selectors for u in units.values()):
        # Shards only help where there are partitions to balance or a file too long for its timeout:
        # a job that fits one partition with whole files keeps them whole (one process, one import).
        whole = _units(config, job, arch.name, files, recorded)
        one = job.partitions == 1 or (job.partitions == AUTO and smallest_fitting_count(whole, budget, 1) == 1)
        if one and all(u.seconds <= per_file for u in whole.values()):
            units, notes = whole, [n for n in notes if "runs whole" not in n]
    label = f"{job.suite} on {arch.name}"
    for unit in units.values():
        limit = unit.timeout_s or per_file
        if unit.seconds > limit:  # measured or not: a passing run never outlives the timeout then in force
            problems.append(f"{label}: {unit.name} is estimated at {unit.seconds:g} s, over the "
                            f"{'shard' if unit.selectors else 'per-file'} timeout of {limit:g} s "
                            f"(raise per_file_timeout_s or fix the estimate)")
    pinned = [u for u in units.values() if u.only_partition is not None]
    auto = job.partitions == AUTO
    cap, cap_why = partition_cap(stage, job, arch)
    if auto:
        count = smallest_fitting_count(units, budget, cap)
        if count is None and any(u.recorded for u in units.values()):
            # measured times grew past what config allows: the stage timeout will say which file;
            # the route must not block every job on it
            notes.append(f"measured estimates fit no partition count up to {cap} ({cap_why}) within {budget:.0f} s: "
                         f"planned {cap} partition(s)")
            count = cap
        elif count is None:
            upto = f"max_partitions {cap}" if cap == stage.max_partitions else f"{cap} ({cap_why})"
            problems.append(f"{label}: no partition count up to {upto} fits the budget "
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
        if u.only_partition is not None and u.only_partition > count:
            problems.append(f"{label}: {u.name} is pinned to partition {u.only_partition} of {count}")
    fits, parts = _fits(units, count, budget)
    plan = JobPlan(job_route(stage, job, arch, count), job, parts, MappingProxyType(units), tuple(disabled), per_file,
                   budget, auto, cap=cap, cap_why=cap_why, notes=tuple(notes))
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
        plans.append(plan_job(config, spec, job, arch, run, disabled, recorded, problems, scan.root))
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
    images: tuple[ImageName, ...]
    if image:
        images, source = (parse_image_name(image),), ImageSource.OVERRIDE
    elif config.images.versions:
        images, source = candidate_images(config.images, arch, today, rocm), ImageSource.VERSIONS
    elif tags is not None:
        images, source = discovered_candidates(config.images, arch, today, tags, rocm), ImageSource.TAG_LIST
    else:
        images, source = (), ImageSource.PULL_TIME
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
        stripped = True
        while stripped:  # "./test/registered/x.py" loses both prefixes
            stripped = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
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
    if plan.image_source in (ImageSource.VERSIONS, ImageSource.TAG_LIST):
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
        if job.auto:
            lines.append(f"    auto: the smallest count whose makespan fits {plan.stage.budget_share:g} of "
                         f"{job.job.timeout_for(arch.name):g} min = {job.budget_s:.0f} s, at most {job.cap} "
                         f"({job.cap_why}): {job.total}")
        lines += [f"    note: {n}" for n in job.notes]
        for number, load in enumerate(job.loads(), 1):
            chosen = " <- this run" if job.selected == number else ""
            units = job.part(number)
            lines.append(f"    partition {number}/{job.total}: {load:.0f} s, {len(units)} unit(s){chosen}")
            lines += [f"      {u.name} ({u.seconds:g} s{', recorded' if u.recorded else ''}"
                      f"{f', shard, timeout {u.timeout_s:.0f} s' if u.selectors else ''})" for u in units]
        lines += [f"    disabled: {f.path}: {f.disabled}" for f in job.disabled]
    return lines


def job_chart(plan: StagePlan, job: JobPlan) -> str:
    """The job's partitions as a Mermaid gantt (the budget marked; this run's partition highlighted)."""
    parts = [[(u.name, u.seconds) for u in job.part(n)] for n in range(1, job.total + 1)]
    title = (f"{job.job.suite} on {plan.resolution.arch.name}: {job.total} partition(s), makespan {job.makespan:.0f} s, "
             f"bound {job.partitioning.lower_bound:.0f} s, budget {job.budget_s:.0f} s")
    return partitions_chart(title, parts, job.budget_s, job.selected)


def render_plan_markdown(plan: StagePlan) -> list[str]:
    """The plan for a Markdown page (a job summary): the text in a block, each job's partitions as a chart."""
    lines = [f"### Plan: {plan.stage.name} on {plan.resolution.arch.name}", "", "```text", *render_plan(plan), "```"]
    for job in plan.jobs:
        lines += ["", job_chart(plan, job)]
    return lines


def _image_line(plan: StagePlan) -> str:
    window = f"within {plan.lookback_days} day(s)"
    if plan.image_source is ImageSource.OVERRIDE:
        return f"override {plan.images[0]}"
    if plan.image_source is ImageSource.VERSIONS:
        return (f"the newest that exists (local, then registry) of {len(plan.images)} candidates "
                f"from the versions override in config ({', '.join(plan.versions_override)}):")
    if plan.image_source is ImageSource.TAG_LIST:
        return f"newest first, {len(plan.images)} candidate(s) in the given tag list matching {plan.image_shape} {window}:"
    where = f"{plan.public_registry}'s tag list" + (f" (LAN mirror {plan.lan_registry}'s when it gives none)"
                                                    if plan.lan_registry else "")
    return (f"{plan.image_shape} {window}, newest date then version; discovered at pull time from {where}; "
            "versions override: none")
