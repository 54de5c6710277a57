"""GitHub event -> runner arches -> the runner label, job name, timeout and partition count of
every stage job. A job runs on the first of the event's arches that the job lists."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ci.changes import Selection, job_runs
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
    runs: bool = True  # selected for this event (targets, labels, change detection)
    why: str = "runs"

    @property
    def job_name(self) -> str:
        return f"{self.suite} ({self.label})"


@dataclass(frozen=True)
class Route:
    event: str | None
    arches: tuple[ArchSpec, ...]
    arch_source: str
    jobs: tuple[JobRoute, ...]
    continue_on_error: bool = False
    bypass_fastfail: bool = False


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
                counts: Mapping[tuple[str, str], int], selection: Selection | None = None) -> tuple[JobRoute, ...]:
    """Each job of these stages on the first of `arches` it lists (a job none lists does not run;
    it is still listed on its own first arch, so a workflow can name it); `counts[(suite, arch)]`
    gives the partition count of jobs whose config says auto."""
    arches = tuple(arches)
    routes = []
    for stage in stages:
        for job in stage.suites:
            arch = next((a for a in arches if a.name in job.arches), None)
            routed = arch is not None
            arch = arch or config.arch(job.arches[0])
            if job.partitions == "auto" and (job.suite, arch.name) not in counts:
                raise UserError(f"{job.suite}: partitions: auto needs the test tree to size it (set GITHUB_WORKSPACE)")
            total = counts.get((job.suite, arch.name), job.partitions)
            runs, why = job_runs(stage, job, selection) if selection else (True, "runs")
            if not routed:
                runs, why = False, "no arch of this event"
            routes.append(dataclasses.replace(job_route(stage, job, arch, int(total)), runs=runs, why=why))
    return tuple(routes)


def route(config: Config, event: str, runner_arch: str | None = None,
          counts: Mapping[tuple[str, str], int] | None = None, cadence: str = "per-commit",
          selection: Selection | None = None, continue_input: bool = False) -> Route:
    """Every job of the event's stages (per-commit or nightly) with its arch, label, timeout and
    whether it runs; continue-on-error for schedules, full runs, the input or the bypass label."""
    arches, source = arches_for_event(config, event, runner_arch or None)
    stages = [s for s in config.stages.values() if s.cadence == cadence]
    selection = selection or Selection(event)
    bypass = bool(config.workflows and config.workflows.fastfail_bypass_label in selection.labels)
    keep_going = continue_input or bypass or selection.run_all or event == "schedule" or cadence == "nightly"
    return Route(event, arches, source, routed_jobs(config, arches, stages, counts or {}, selection),
                 continue_on_error=keep_going, bypass_fastfail=bypass)


def route_outputs(result: Route) -> dict[str, str]:
    """Step outputs for workflows: the arches, and per suite its arch, label, name, timeout and partitions."""
    return {
        "arches": ",".join(a.name for a in result.arches),
        "continue_on_error": "true" if result.continue_on_error else "false",
        "bypass_fastfail": "true" if result.bypass_fastfail else "false",
        "jobs": json.dumps(
            {
                job.suite: {
                    "arch": job.arch,
                    "run": job.runs,
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
        lines.append(f"  {job.suite:<{width}}  {job.label}  partitions={job.partitions}  timeout={job.timeout_minutes}m"
                     + ("" if job.runs else f"  skipped: {job.why}"))
    lines.append(f"continue-on-error: {'yes' if result.continue_on_error else 'no'}; "
                 f"fast-fail bypassed: {'yes' if result.bypass_fastfail else 'no'}")
    return lines
