"""What a stage run would do, as a value (pure): arch, jobs, images, timeouts, and each suite's
partitions with their files and estimated totals. --dry-run prints it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.arch import ArchResolution
from ci.config import Config, StageSpec
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
    images: tuple[ImageName, ...]  # candidates newest first, the one override, or none yet (pull time)
    image_overridden: bool
    image_source: str  # override | versions (config's override) | tag-list (given) | pull-time
    image_shape: str  # what discovery looks for: rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD>
    versions_override: tuple[str, ...]
    lookback_days: int
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
    tags: Sequence[str] | None = None,
) -> StagePlan:
    """The plan as a value, with no network: candidates from the image override, the versions
    override in config, or a tag list passed in; else only their shape (discovered at pull time)."""
    spec = config.stage(stage)
    jobs = stage_jobs(config, resolution.arch, [spec.name])
    if suite is not None:
        jobs = tuple(j for j in jobs if j.suite == suite)
        if not jobs:
            raise UserError(f"unknown suite {suite!r} for {spec.name} (allowed: {', '.join(j.suite for j in spec.suites)})")
    rocm = check_rocm(config.images, rocm)
    if image:
        images, source = (parse_image_name(image),), "override"
    elif config.images.versions:
        images, source = candidate_images(config.images, resolution.arch, today, rocm), "versions"
    elif tags is not None:
        images, source = discovered_candidates(config.images, resolution.arch, today, tags, rocm), "tag-list"
    else:
        images, source = (), "pull-time"
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
        image_source=source,
        image_shape=tag_shape(config.images, resolution.arch, rocm),
        versions_override=config.images.versions,
        lookback_days=config.images.lookback_days,
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
        "  image: " + _image_line(plan),
    ]
    if plan.image_source in ("versions", "tag-list"):
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
