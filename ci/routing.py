"""GitHub event -> runner arch -> the runner label, job name and timeout of every stage job."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ci.config import ArchSpec, Config
from ci.errors import UserError


@dataclass(frozen=True)
class JobRoute:
    stage: str
    suite: str
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
    arch: ArchSpec
    arch_source: str
    jobs: tuple[JobRoute, ...]


def runner_label(arch: ArchSpec, gpus: int) -> str:
    """The smallest pool of this arch with at least `gpus` GPUs."""
    fitting = [n for n in sorted(arch.pool.gpu_counts) if n >= gpus]
    if not fitting:
        raise UserError(f"no {arch.name} runner pool has {gpus} GPUs (pools: {list(arch.pool.gpu_counts)})")
    return arch.pool.label.format(gpus=fitting[0])


def arch_for_event(config: Config, event: str, runner_arch: str | None) -> tuple[ArchSpec, str]:
    events = config.routing.events
    if event not in events:
        raise UserError(f"unknown event {event!r} (allowed: {', '.join(events)})")
    target = events[event]
    if target == "input":
        if runner_arch:
            return config.arch(runner_arch), f"{event} input runner_arch"
        return config.arch(config.routing.default_input), f"{event} default runner_arch"
    if runner_arch and runner_arch != target:
        inputs = ", ".join(e for e, t in events.items() if t == "input")
        raise UserError(f"--runner-arch applies only to {inputs}; event {event} always routes to {target}")
    return config.arch(target), f"{event} routing"


def stage_jobs(config: Config, arch: ArchSpec, stages: list[str] | None = None) -> tuple[JobRoute, ...]:
    names = [config.stage(s).name for s in stages] if stages else list(config.stages)
    return tuple(
        JobRoute(
            stage=name,
            suite=job.suite,
            gpus=job.gpus,
            partitions=job.partitions,
            label=runner_label(arch, job.gpus),
            timeout_minutes=config.stages[name].job_timeout_minutes(arch.name),
        )
        for name in names
        for job in config.stages[name].suites
    )


def route(config: Config, event: str, runner_arch: str | None = None) -> Route:
    arch, source = arch_for_event(config, event, runner_arch or None)
    return Route(event, arch, source, stage_jobs(config, arch))


def route_outputs(result: Route) -> dict[str, str]:
    """Step outputs for workflows: the arch, and per suite its label, name, timeout and partitions."""
    return {
        "arch": result.arch.name,
        "jobs": json.dumps(
            {
                job.suite: {
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
    lines = [f"arch: {result.arch.name} ({result.arch.product}, {result.arch.gfx}) from {result.arch_source}"]
    width = max(len(j.suite) for j in result.jobs)
    for job in result.jobs:
        lines.append(f"  {job.suite:<{width}}  {job.label}  partitions={job.partitions}  timeout={job.timeout_minutes}m")
    return lines
