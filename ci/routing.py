"""GitHub event -> runner arches -> the runner label, job name, timeout and partition count of
every stage job. A job runs on the first of the event's arches that the job lists."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ci.config import ArchSpec, Config, StageSpec, SuiteJob
from ci.errors import UserError


@dataclass(frozen=True)
class JobRoute:
    stage: str
    suite: str
    arch: str
    gpus: int
    partitions: int
    label: str
    timeout_minutes: int  # the GitHub job's timeout: stage budget + setup

    @property
    def job_name(self) -> str:
        return f"{self.suite} ({self.label})"


@dataclass(frozen=True)
class Route:
    event: str | None
    arches: tuple[ArchSpec, ...]
    arch_source: str
    jobs: tuple[JobRoute, ...]


def runner_label(arch: ArchSpec, gpus: int, suffix: str = "") -> str:
    """The smallest pool of this arch with at least `gpus` GPUs."""
    fitting = [n for n in sorted(arch.pool.gpu_counts) if n >= gpus]
    if not fitting:
        raise UserError(f"no {arch.name} runner pool has {gpus} GPUs (pools: {list(arch.pool.gpu_counts)})")
    return arch.pool.label.format(gpus=fitting[0]) + suffix


def arches_for_event(config: Config, event: str, runner_arch: str | None) -> tuple[tuple[ArchSpec, ...], str]:
    events = config.routing.events
    if event not in events:
        raise UserError(f"unknown event {event!r} (allowed: {', '.join(events)})")
    targets = events[event]
    if runner_arch and "input" not in targets:
        inputs = ", ".join(e for e, t in events.items() if "input" in t)
        raise UserError(f"--runner-arch applies only to {inputs}; event {event} routes to {', '.join(targets)}")
    if runner_arch and runner_arch not in config.routing.input_arches:
        raise UserError(f"--runner-arch {runner_arch!r}: not a pool the input may choose "
                        f"(allowed: {', '.join(config.routing.input_arches)})")
    chosen = runner_arch or config.routing.default_input
    names = [chosen if t == "input" else t for t in targets]
    source = f"{event} routing" + (f" (runner_arch {chosen}{'' if runner_arch else ', the default'})" if "input" in targets else "")
    return tuple(config.arch(n) for n in dict.fromkeys(names)), source


def job_route(stage: StageSpec, job: SuiteJob, arch: ArchSpec, partitions: int) -> JobRoute:
    return JobRoute(stage=stage.name, suite=job.suite, arch=arch.name, gpus=job.gpus, partitions=partitions,
                    label=runner_label(arch, job.gpus, job.label_suffix),
                    timeout_minutes=stage.job_timeout_minutes(job, arch.name))


def routed_jobs(config: Config, arches: Iterable[ArchSpec], stages: Iterable[StageSpec],
                counts: Mapping[tuple[str, str], int]) -> tuple[JobRoute, ...]:
    """Each job of these stages on the first of `arches` it lists; `counts[(suite, arch)]` gives
    the partition count of jobs whose config says auto."""
    arches = tuple(arches)
    routes = []
    for stage in stages:
        for job in stage.suites:
            arch = next((a for a in arches if a.name in job.arches), None)
            if arch is None:
                continue
            if job.partitions == "auto" and (job.suite, arch.name) not in counts:
                raise UserError(f"{job.suite}: partitions: auto needs the test tree to size it (set GITHUB_WORKSPACE)")
            total = counts.get((job.suite, arch.name), job.partitions)
            routes.append(job_route(stage, job, arch, int(total)))
    return tuple(routes)


def route(config: Config, event: str, runner_arch: str | None = None,
          counts: Mapping[tuple[str, str], int] | None = None, cadence: str = "per-commit") -> Route:
    """Every job of the event's stages (per-commit or nightly) with its arch, label and timeout."""
    arches, source = arches_for_event(config, event, runner_arch or None)
    stages = [s for s in config.stages.values() if s.cadence == cadence]
    return Route(event, arches, source, routed_jobs(config, arches, stages, counts or {}))


def route_outputs(result: Route) -> dict[str, str]:
    """Step outputs for workflows: the arches, and per suite its arch, label, name, timeout and partitions."""
    return {
        "arches": ",".join(a.name for a in result.arches),
        "jobs": json.dumps(
            {
                job.suite: {
                    "arch": job.arch,
                    "label": job.label,
                    "name": job.job_name,
                    "timeout": job.timeout_minutes,
                    "partitions": list(range(1, job.partitions + 1)),
                    "total": job.partitions,
                }
                for job in result.jobs
            },
            separators=(",", ":"),
        ),
    }


def render_route(result: Route) -> list[str]:
    lines = [f"arches: {', '.join(f'{a.name} ({a.product}, {a.gfx})' for a in result.arches)} from {result.arch_source}"]
    width = max((len(j.suite) for j in result.jobs), default=0)
    for job in result.jobs:
        lines.append(f"  {job.suite:<{width}}  {job.label}  partitions={job.partitions}  timeout={job.timeout_minutes}m")
    return lines
