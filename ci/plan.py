"""What a stage run would do, as a value (pure): arch, jobs, images, timeouts. --dry-run prints it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ci.arch import ArchResolution
from ci.config import Config, StageSpec
from ci.errors import UserError
from ci.images import ImageName, candidate_images, parse_image_name
from ci.routing import JobRoute, stage_jobs


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


def build_plan(
    config: Config,
    stage: str,
    resolution: ArchResolution,
    today: dt.date,
    image: str | None = None,
    rocm: str | None = None,
    suite: str | None = None,
) -> StagePlan:
    spec = config.stage(stage)
    jobs = stage_jobs(config, resolution.arch, [spec.name])
    if suite is not None:
        jobs = tuple(j for j in jobs if j.suite == suite)
        if not jobs:
            raise UserError(f"unknown suite {suite!r} for {spec.name} (allowed: {', '.join(j.suite for j in spec.suites)})")
    images = (parse_image_name(image),) if image else candidate_images(config.images, resolution.arch, today, rocm)
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
    )


def render_plan(plan: StagePlan) -> list[str]:
    arch = plan.resolution.arch
    lines = [
        f"stage {plan.stage.name} on {arch.name} ({arch.product}, {arch.gfx}, image arch {arch.image_arch})",
        f"  arch from: {plan.resolution.source}",
        f"  stage timeout: {plan.timeout_minutes:g} min; per-file timeout: {plan.per_file_timeout_s:g} s",
        f"  registries: LAN {plan.lan_registry or '(none: LOCAL_DOCKER_REGISTRY unset)'}; public {plan.public_registry}",
        "  image: " + ("override " + str(plan.images[0]) if plan.image_overridden else
                       f"newest existing of {len(plan.images)} candidates, first {plan.images[0]}, last {plan.images[-1]}"),
        "  jobs:",
    ]
    for job in plan.jobs:
        lines.append(f"    {job.job_name}: {job.gpus} GPU(s), {job.partitions} partition(s), job timeout {job.timeout_minutes} min")
    return lines
