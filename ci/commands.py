"""Top-level operations behind every task and session: load config, resolve, then call the
module that does the work. Each takes plain arguments and returns an exit code."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence

from ci import github, pull, registry
from ci.arch import ArchResolution, resolve_arch
from ci.cli import parse_stage_args
from ci.config import Config, load_config
from ci.errors import UserError
from ci.images import check_rocm, parse_image_name
from ci.plan import build_plan, render_plan
from ci.routing import arch_for_event, render_route, route, route_outputs


def _env() -> Mapping[str, str]:
    return os.environ


def _resolve(config: Config, arch: str | None, event: str | None = None, runner_arch: str | None = None) -> ArchResolution:
    if event and not arch:
        spec, source = arch_for_event(config, event, runner_arch)
        return ArchResolution(spec, source)
    return resolve_arch(config, flag=arch, env=_env())


def route_command(event: str, runner_arch: str | None = None) -> int:
    """`invoke route`: print the arch and runner label of every stage job; write $GITHUB_OUTPUT."""
    config = load_config()
    result = route(config, event, runner_arch)
    for line in render_route(result):
        print(line)
    if github.write_outputs(route_outputs(result), _env()):
        print("wrote arch and jobs to $GITHUB_OUTPUT")
    return 0


def plan_command(event: str | None = None, arch: str | None = None, stage: str | None = None,
                 image: str | None = None, rocm: str | None = None) -> int:
    """`invoke plan`: what each stage would do, with no Docker and no GPU."""
    config = load_config()
    stages = [config.stage(stage).name] if stage else list(config.stages)
    resolution = _resolve(config, arch, event)
    for name in stages:
        for line in render_plan(build_plan(config, name, resolution, _today(), image=image, rocm=rocm)):
            print(line)
    return 0


def stage_session(stage: str, runner_arch: str, posargs: Sequence[str], skip: Callable[[str], None]) -> int:
    """One parametrized nox session: run when `runner_arch` is this run's arch, else skip."""
    config = load_config()
    args = parse_stage_args(f"nox -s {stage.replace('-', '_')} --", posargs)
    config.stage(stage)
    resolution = resolve_arch(config, flag=args.arch, env=_env())
    if resolution.arch.name != runner_arch:
        skip(f"runner_arch {runner_arch} is not this run's arch {resolution.arch.name} (from {resolution.source})")
        return 0
    plan = build_plan(config, stage, resolution, _today(),
                      image=args.image, rocm=args.rocm, suite=args.suite)
    if args.dry_run:
        for line in render_plan(plan):
            print(line)
        return 0
    raise UserError("stage execution lands with the staged-runs work; use --dry-run for the plan")


def arch_names() -> list[str]:
    """The arches nox parametrizes the stage sessions over."""
    return list(load_config().arches)


def pull_image_command(arch: str | None = None, image: str | None = None, rocm: str | None = None) -> int:
    """`invoke pull-image`: resolve (unless --image) and pull, LAN mirror first."""
    _image_operation(pull.pull_image, arch, image, rocm)
    return 0


def mirror_image_command(arch: str | None = None, image: str | None = None, rocm: str | None = None) -> int:
    """`invoke mirror-image`: pull from public, push to the LAN registry, verify the digest."""
    _image_operation(pull.mirror_image, arch, image, rocm)
    return 0


def _image_operation(operation, arch: str | None, image: str | None, rocm: str | None):
    config = load_config()
    if image:
        parse_image_name(image)  # bad input fails before any Docker call
    else:
        check_rocm(config.images, rocm)
    spec = None if image else _resolve(config, arch).arch
    client = registry.connect(config.pull.probe_timeout_s)
    return operation(config, client, _env(), spec, image, rocm, _today())


def _today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()
