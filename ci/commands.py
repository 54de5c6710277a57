"""Top-level operations behind every task and session: load config, resolve, then call the
module that does the work. Each takes plain arguments and returns an exit code."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ci import build, container, github, gpu, pull, registry, workflows
from ci.arch import ArchResolution, resolve_arch
from ci.changes import Selection, changed_files, matched_filters, parse_targets
from ci.cli import parse_stage_args
from ci.config import Config, load_config
from ci.errors import ToolFailure, UserError
from ci.images import check_rocm, parse_image_name
from ci.inputs import InputProblem, check_output_dir
from ci.partition import parse_partition, read_durations
from ci.plan import BudgetProblems, build_plan, load_tree, normalize_durations, plan_job, render_plan
from ci.routing import arches_for_event, render_route, route, route_outputs
from ci.suites import TreeCheck, TreeScan, select
from ci.stage import StageOptions, container_path, partition_label, run_stage


def _env() -> Mapping[str, str]:
    return os.environ


def _workspace() -> Path:
    """The SGLang checkout: $GITHUB_WORKSPACE in Actions, else the current folder."""
    return Path(_env().get("GITHUB_WORKSPACE") or os.getcwd())


def _resolve(config: Config, arch: str | None, event: str | None = None) -> ArchResolution:
    if event and not arch:
        arches, source = arches_for_event(config, event, None)
        return ArchResolution(arches[0], source)
    return resolve_arch(config, flag=arch, env=_env())


def _tree(config: Config, test_root: str | None = None) -> tuple[TreeScan, TreeCheck]:
    """The workspace's test tree, scanned and checked once for the whole command."""
    return load_tree(config, _workspace() / (test_root or config.suites.test_root))


def _partition_counts(config: Config, arches, stages, tree, recorded: Mapping[str, float]) -> dict[tuple[str, str], int]:
    """Partition counts of jobs whose config says auto, sized on the tree (budget problems fail here)."""
    scan, _ = tree
    problems: list[str] = []
    counts = {}
    recorded = normalize_durations(recorded, config)
    for stage in stages:
        for job in stage.suites:
            arch = next((a for a in arches if a.name in job.arches), None)
            if arch is None:
                continue
            run, disabled = select(scan.files, job.suite, stage.nightly)
            counts[(job.suite, arch.name)] = plan_job(config, stage, job, arch, run, disabled, recorded, problems).total
    if problems:
        raise BudgetProblems(problems)
    return counts


def route_command(event: str, runner_arch: str | None = None, cadence: str = "per-commit",
                  durations: str | None = None, target: str | None = None, labels: str | None = None,
                  changes_since: str | None = None, run_all: bool = False, continue_on_error: bool = False) -> int:
    """`invoke route`: the runner label, timeout, partition count and run/skip of every job the
    event runs (per-commit or nightly stages); written to $GITHUB_OUTPUT in Actions."""
    config = load_config()
    github.check_files(_env(), ("GITHUB_OUTPUT",))
    if cadence not in ("per-commit", "nightly"):
        raise UserError(f"--cadence {cadence!r}: allowed: per-commit, nightly")
    arches, _ = arches_for_event(config, event, runner_arch or None)
    stages = [s for s in config.stages.values() if s.cadence == cadence]
    tree = _tree(config)
    counts = _partition_counts(config, arches, stages, tree, read_durations(Path(durations) if durations else None))
    changed = None
    if changes_since and event == "pull_request" and not run_all:
        files = changed_files(_workspace(), changes_since, config.workflows.git_timeout_s)
        changed = frozenset(matched_filters(config.workflows.change_filters, files, workflows.rendered_paths()))
        print(f"changes: {len(files)} file(s); filters matched: {', '.join(sorted(changed)) or 'none'}")
    label_set = frozenset(x.strip() for x in (labels or "").split(",") if x.strip())
    selection = Selection(event, parse_targets(config, target), changed, label_set, run_all)
    result = route(config, event, runner_arch, counts, cadence, selection, continue_on_error)
    for warning in tree[1].warnings:
        print(f"warning: {warning}")
    for line in render_route(result):
        print(line)
    if github.write_outputs(route_outputs(result), _env()):
        print("wrote arches, jobs, continue_on_error and bypass_fastfail to $GITHUB_OUTPUT")
    return 0


def finish_command() -> int:
    """`invoke finish`: the workflow's last job; fails when any job failed or was cancelled."""
    code, lines = github.needs_verdict(_env().get(workflows.NEEDS_ENV, ""))
    for line in lines:
        print(line)
    return code


def plan_command(event: str | None = None, arch: str | None = None, stage: str | None = None,
                 image: str | None = None, rocm: str | None = None) -> int:
    """`invoke plan`: what each stage would do on the arch, with no Docker and no GPU; the tree is
    scanned once for all stages."""
    config = load_config()
    stages = [config.stage(stage).name] if stage else list(config.stages)
    resolution = _resolve(config, arch, event)
    tree = _tree(config)
    for name in stages:
        if not config.stages[name].jobs_for(resolution.arch.name):
            print(f"stage {name}: no job on {resolution.arch.name}")
            continue
        plan = build_plan(config, name, resolution, _today(), tree, image=image, rocm=rocm)
        for line in render_plan(plan):
            print(line)
    return 0


def stage_session(stage: str, runner_arch: str, posargs: Sequence[str], skip: Callable[[str], None]) -> int:
    """One parametrized nox session: run when `runner_arch` is this run's arch, else skip."""
    config = load_config()
    spec = config.stage(stage)
    args = parse_stage_args(f"nox -s {spec.name.replace('-', '_')} --", posargs)
    partition_arg = parse_partition(args.partition, config.limits.partitions) if args.partition is not None else None
    if args.retries is not None and not 0 <= args.retries <= config.limits.retries:
        raise UserError(f"--retries {args.retries}: allowed: 0 to {config.limits.retries} (config/limits.yaml retries)")
    github.check_files(_env(), ("GITHUB_STEP_SUMMARY",))
    resolution = resolve_arch(config, flag=args.arch, env=_env())
    if resolution.arch.name != runner_arch:
        skip(f"runner_arch {runner_arch} is not this run's arch {resolution.arch.name} (from {resolution.source})")
        return 0
    workspace = _workspace()
    durations = Path(args.durations) if args.durations else None
    image = args.image or _env().get("AMD_CI_IMAGE") or None  # the old scripts' override, kept
    tree = _tree(config, args.test_root)
    if not spec.jobs_for(resolution.arch.name) and args.dry_run:
        print(f"stage {spec.name}: no job runs on {resolution.arch.name} (its jobs run on "
              f"{', '.join(sorted({a for j in spec.suites for a in j.arches}))}): nothing to plan")
        return 0
    plan = build_plan(config, stage, resolution, _today(), tree, image=image, rocm=args.rocm, suite=args.suite,
                      partition_arg=partition_arg, recorded=read_durations(durations))
    if args.dry_run:
        for line in render_plan(plan):
            print(line)
        return 0
    report_dir = Path(args.report_dir) if args.report_dir else workspace / config.container.reports_dir / partition_label(plan)
    container_path(workspace, report_dir, config.container.workdir)  # under the workspace, before anything is made
    try:
        check_output_dir(report_dir)
    except InputProblem as problem:
        raise UserError(f"--report-dir {report_dir}: {problem}") from None
    options = StageOptions(
        workspace=workspace,
        report_dir=report_dir,
        retries=spec.retries if args.retries is None else args.retries,
        continue_on_error=args.continue_on_error,
        durations=durations,
    )
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return run_stage(config, plan, options, _env(), _today())


def arch_names() -> list[str]:
    """The arches nox parametrizes the stage sessions over."""
    return list(load_config().arches)


def stage_sessions() -> list[tuple[str, str]]:
    """(stage name, description) of every stage: nox registers one session each."""
    return [(name, spec.description) for name, spec in load_config().stages.items()]


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
    image = image or _env().get("AMD_CI_IMAGE") or None
    if image:
        parse_image_name(image)  # bad input fails before any Docker call
    else:
        check_rocm(config.images, rocm)
    spec = None if image else _resolve(config, arch).arch
    # The tag list needs no Docker: a registry that gives none fails here, before any Docker call.
    today = _today()
    candidates = None if image else pull.nightly_candidates(config, spec, rocm, today, _env())
    client = registry.connect(config.pull.probe_timeout_s)
    return operation(config, client, _env(), spec, image, rocm, today, candidates)


def _today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


# --- containers -------------------------------------------------------------------------------
def _containers(config: Config) -> container.Containers:
    return container.Containers(registry.connect(config.pull.probe_timeout_s), config.container, secrets=_env())


def _local_or_pulled(config: Config, client, arch, image: str | None) -> str:
    """The image to start: one named and present, else pulled (LAN first) as pull-image would."""
    if image:
        name = parse_image_name(image)
        if registry.local_image(client, name) is not None:
            return str(name)
    return str(pull.pull_image(config, client, _env(), arch, image, None, _today()).image)


def start_container_command(arch: str | None = None, variant: str = "default", image: str | None = None,
                            gpu_clean: bool = True) -> int:
    """`invoke start-container`: GPU hygiene, then the CI container with everything from config."""
    config = load_config()
    if variant != "default" and variant not in config.container.variants:
        raise UserError(f"unknown variant {variant!r} (allowed: default, {', '.join(config.container.variants)})")
    if image:
        parse_image_name(image)
    spec_arch = _resolve(config, arch).arch
    containers = _containers(config)
    if gpu_clean:
        gpu.gpu_clean(config.container, containers.client, sys.stdout)
    name = _local_or_pulled(config, containers.client, spec_arch, image)
    spec = container.build_spec(config.container, spec_arch, variant, name, container.HostView(_env()))
    containers.start(spec, _env())
    return 0


def exec_command(argv: Sequence[str], arch: str | None = None) -> int:
    """`invoke exec -- CMD...`: run exactly the argv typed after `--` in the container with the CI
    env; returns its exit code."""
    if not argv:
        raise UserError("nothing to run: give the command after --, e.g. invoke exec -- python3 -V")
    config = load_config()
    containers = _containers(config)
    running = containers.find()
    started_for = running.labels.get(f"{container.LABEL}.arch") if running is not None and not arch else None
    spec_arch = config.arch(started_for) if started_for else _resolve(config, arch).arch  # the container's own arch
    return container.exec_with_retry(containers, spec_arch, argv)


def stop_container_command() -> int:
    """`invoke stop-container`: SIGINT, grace, stop, remove. Nothing to stop is not an error."""
    config = load_config()
    containers = _containers(config)
    if not containers.stop():
        print(f"no container {config.container.name} to stop")
    return 0


def gpu_clean_command() -> int:
    """`invoke gpu-clean`: stale containers and device holders gone, VRAM checked."""
    config = load_config()
    client = None
    try:
        client = registry.connect(config.pull.probe_timeout_s)
    except ToolFailure as exc:
        print(f"no Docker Engine ({exc}); cleaning host processes only")
    gpu.gpu_clean(config.container, client, sys.stdout)
    return 0


def kernel_tests_command(pytest_args: Sequence[str] = (), arch: str | None = None, host: bool = False) -> int:
    """`invoke kernel-tests`: pytest on sgl_kernel_tests with known issues for the arch, JUnit XML;
    the words after `--` go to pytest exactly as typed."""
    pytest_args = list(pytest_args)
    config = load_config()
    spec_arch = _resolve(config, arch).arch
    reports = config.container.reports_dir
    if host:
        workspace = _workspace()
        try:
            check_output_dir(workspace / reports)
        except InputProblem as problem:
            raise UserError(f"reports folder {workspace / reports}: {problem}") from None
        tests = container.TOOLKIT / "sgl_kernel_tests"
        argv = [sys.executable, "-m", "pytest", "-c", str(tests / "pytest.ini"), str(tests), "-p", "ci.known_issues",
                "--sgl-arch", spec_arch.name, f"--junitxml={workspace / reports / 'kernel-tests.xml'}", *pytest_args]
        env = {**_env(), **container.exec_env(config.container, spec_arch),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(container.TOOLKIT), _env().get("PYTHONPATH")]))}
        return subprocess.run(argv, env=env, check=False).returncode
    target = f"{config.container.workdir}/{reports}/kernel-tests.xml"
    argv = ["python3", "-m", "pytest", "-c", "/sgl-ci/sgl_kernel_tests/pytest.ini", "/sgl-ci/sgl_kernel_tests",
            "-p", "ci.known_issues", "--sgl-arch", spec_arch.name,
            f"--junitxml={target}", *pytest_args]
    containers = _containers(config)
    return containers.exec(argv, container.exec_env(config.container, spec_arch), config.container.workdir)


def demo_command() -> int:
    """`nox -s demo`: the whole path end to end on loopback (see ci.demo)."""
    from ci import (
        demo,  # the demo's own example files and sandbox are not needed by CI runs
    )

    return demo.run_demo()


def build_image_command(arch: str | None = None, rocm: str | None = None, push: bool = True) -> int:
    """`invoke build-image`: build today's nightly for the arch, push it, output its name."""
    config = load_config()
    github.check_files(_env(), ("GITHUB_OUTPUT",))
    spec_arch = _resolve(config, arch).arch
    workspace = _workspace()
    build.build_image(config, registry.connect(config.pull.probe_timeout_s), _env(), spec_arch, rocm, workspace,
                      _today(), push=push)
    return 0


def workflows_command(check: bool = False) -> int:
    """`invoke workflows`: render .github/ from config; --check fails when the files differ."""
    config = load_config()
    root = container.TOOLKIT
    if check:
        differ = workflows.stale(config, root)
        for path in differ:
            print(f"{path} differs from what config renders: run `invoke workflows`")
        return 1 if differ else 0
    for path in workflows.write(config, root):
        print(f"wrote {path}")
    return 0
