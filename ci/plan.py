"""What a stage run would do, as a value (pure): arch, jobs, images, timeouts, and each suite's
partitions with their files and estimated totals. --dry-run prints it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ci.arch import ArchResolution
from ci.config import Config, StageSpec
from ci.errors import UserError
from ci.images import ImageName, candidate_images, parse_image_name
from ci.partition import Item, Partitioning, partition
from ci.routing import JobRoute, stage_jobs
from ci.suites import RegisteredFile, discover, select


@dataclass(frozen=True)
class SuitePlan:
    job: JobRoute
    partitioning: Partitioning
    selected: int | None  # 1-based partition to run; None: all
    files: dict[str, RegisteredFile]
    disabled: tuple[RegisteredFile, ...]

    def files_to_run(self) -> list[RegisteredFile]:
        parts = self.partitioning.parts if self.selected is None else (self.partitioning.parts[self.selected - 1],)
        return [self.files[item.name] for part in parts for item in part]


@dataclass(frozen=True)
class StagePlan:
    stage: StageSpec
    resolution: ArchResolution
    jobs: tuple[JobRoute, ...]
    images: tuple[ImageName, ...]  # candidates newest first, or the one override
    image_overridden: bool
    lan_registry: str | None
    public_registry: str
    timeout_minutes: float
    per_file_timeout_s: float
    test_root: Path | None = None
    suites: tuple[SuitePlan, ...] = ()
    note: str = ""  # why suites are not listed, when they are not


def build_plan(
    config: Config,
    stage: str,
    resolution: ArchResolution,
    today: dt.date,
    image: str | None = None,
    rocm: str | None = None,
    suite: str | None = None,
    test_root: Path | None = None,
    partition_arg: tuple[int, int] | None = None,
    recorded: dict[str, float] | None = None,
    require_tests: bool = False,
) -> StagePlan:
    spec = config.stage(stage)
    jobs = stage_jobs(config, resolution.arch, [spec.name])
    if suite is not None:
        jobs = tuple(j for j in jobs if j.suite == suite)
        if not jobs:
            raise UserError(f"unknown suite {suite!r} for {spec.name} (allowed: {', '.join(j.suite for j in spec.suites)})")
    images = (parse_image_name(image),) if image else candidate_images(config.images, resolution.arch, today, rocm)
    suites: list[SuitePlan] = []
    note = ""
    if test_root is not None and test_root.is_dir():
        found = discover(test_root, config, resolution.arch.name)
        for job in jobs:
            run, disabled = select(found, [job.suite])
            by_path = {f.path: f for f in run}
            total = partition_arg[1] if partition_arg else job.partitions
            items = [Item(f.path, (recorded or {}).get(f.path, f.est_time)) for f in run]
            suites.append(SuitePlan(job, partition(items, total), partition_arg[0] if partition_arg else None,
                                    by_path, tuple(disabled)))
    elif require_tests:
        raise UserError(f"test root {test_root} not found (set --test-root or suites.test_root, relative to the workspace)")
    else:
        note = f"test root {test_root} not found: suites and partitions not listed"
    return StagePlan(
        stage=spec,
        resolution=resolution,
        jobs=jobs,
        images=images,
        image_overridden=bool(image),
        lan_registry=config.images.registries.lan,
        public_registry=config.images.registries.public,
        timeout_minutes=spec.timeout_for(resolution.arch.name),
        per_file_timeout_s=spec.per_file_timeout_s,
        test_root=test_root,
        suites=tuple(suites),
        note=note,
    )


def render_plan(plan: StagePlan) -> list[str]:
    arch = plan.resolution.arch
    lines = [
        f"stage {plan.stage.name} on {arch.name} ({arch.product}, {arch.gfx}, image arch {arch.image_arch})",
        f"  arch from: {plan.resolution.source}",
        f"  stage timeout: {plan.timeout_minutes:g} min; per-file timeout: {plan.per_file_timeout_s:g} s; retries: {plan.stage.retries}",
        f"  registries: LAN {plan.lan_registry or '(none: LOCAL_DOCKER_REGISTRY unset)'}; public {plan.public_registry}",
        "  image: " + ("override " + str(plan.images[0]) if plan.image_overridden else
                       f"the newest that exists (local, then registry) of {len(plan.images)} candidates:"),
    ]
    if not plan.image_overridden:
        lines += [f"    {image}" for image in plan.images]
    lines.append("  jobs:")
    for job in plan.jobs:
        lines.append(f"    {job.job_name}: {job.gpus} GPU(s), {job.partitions} partition(s), job timeout {job.timeout_minutes} min")
    if plan.note:
        lines.append(f"  {plan.note}")
    for suite in plan.suites:
        parts = suite.partitioning
        lines.append(f"  suite {suite.job.suite}: {len(suite.files)} file(s), {len(parts.parts)} partition(s), "
                     f"makespan {parts.makespan:.0f} s, lower bound {parts.lower_bound:.0f} s "
                     f"(max of longest file and total/N)")
        for number, (part, total) in enumerate(zip(parts.parts, parts.totals), 1):
            chosen = " <- this run" if suite.selected == number else ""
            lines.append(f"    partition {number}/{len(parts.parts)}: {total:.0f} s, {len(part)} file(s){chosen}")
            lines += [f"      {item.name} ({item.seconds:g} s)" for item in part]
        lines += [f"    disabled: {f.path}: {f.disabled}" for f in suite.disabled]
    return lines
