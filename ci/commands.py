"""Top-level operations behind every task and session: load config, resolve, then call the
module that does the work. Each takes plain arguments and returns an exit code."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Only what every command needs is imported here: each command imports its own operation, so a
# door that pulls an image never loads the stage runner, the replay or pytest.
from ci import github
from ci.arch import ArchResolution, resolve_arch
from ci.config import Config, load_config
from ci.errors import ExitCode, InfraFailure, ToolFailure, UserError
from ci.images import check_rocm, image_override, parse_image_name
from ci.inputs import InputProblem, check_output_dir

if TYPE_CHECKING:
    from ci.container import Containers
    from ci.durations import Durations
    from ci.suites import TreeCheck, TreeScan


def _env() -> Mapping[str, str]:
    return os.environ


def _workspace() -> Path:
    return github.workspace(_env())


def _resolve(config: Config, arch: str | None) -> ArchResolution:
    return resolve_arch(config, flag=arch, env=_env())


def _in_workspace(path: str | None) -> Path | None:
    """A path a person or a workflow gave: relative ones are under the workspace (nox runs in the
    toolkit's folder, the workflows name files of the SGLang checkout)."""
    return None if not path else _workspace() / path


def _tree(config: Config, test_root: str | None = None) -> tuple[TreeScan, TreeCheck]:
    """The workspace's test tree, scanned and checked once for the whole command."""
    from ci.plan import load_tree

    return load_tree(config, _workspace() / (test_root or config.suites.test_root))


def _partition_counts(config: Config, arches, stages, tree, durations: Durations,
                      notes: list[str] | None = None) -> dict[tuple[str, str], int]:
    """Partition counts of every job on its arch, sized on the tree and the durations (measured
    estimates per arch, long files split by class); budget problems fail here."""
    from ci.plan import BudgetProblems, normalize_durations, plan_job
    from ci.suites import select

    scan, _ = tree
    problems: list[str] = []
    counts = {}
    per_arch = {a.name: normalize_durations(durations.for_arch(a.name, config.durations.history), config) for a in arches}
    for stage in stages:
        for job in stage.suites:
            arch = next((a for a in arches if a.name in job.arches), None)
            if arch is None:
                continue
            run, disabled = select(scan.files, job.suite, stage.nightly)
            plan = plan_job(config, stage, job, arch, run, disabled, per_arch[arch.name], problems, scan.root)
            counts[(job.suite, arch.name)] = plan.total
            if notes is not None:
                notes += [f"{job.suite} on {arch.name}: {n}" for n in plan.notes]
    if problems:
        raise BudgetProblems(problems)
    return counts


def route_command(event: str, runner_arch: str | None = None, cadence: str = "per-commit",
                  durations: str | None = None, target: str | None = None, labels: str | None = None,
                  changes_since: str | None = None, run_all: bool = False, continue_on_error: bool = False) -> int:
    """`invoke route`: the runner label, timeout, partition count and run/skip of every job the
    event runs (per-commit or nightly stages); written to $GITHUB_OUTPUT in Actions."""
    from ci import workflows
    from ci.changes import Selection, changed_files, matched_filters, parse_targets
    from ci.durations import read_durations_or_warn
    from ci.routing import arches_for_event, render_route, route, route_outputs

    config = load_config()
    github.check_files(_env(), ("GITHUB_OUTPUT",))
    if cadence not in ("per-commit", "nightly"):
        raise UserError(f"--cadence {cadence!r}: allowed: per-commit, nightly")
    arches, _ = arches_for_event(config, event, runner_arch or None)
    stages = [s for s in config.stages.values() if s.cadence == cadence]
    tree = _tree(config)
    # The store is a cache carried between runs: missing or corrupt means est_time, with a warning.
    used, warning = read_durations_or_warn(_in_workspace(durations), config.durations.history)
    if warning:
        print(f"::warning title=durations::{warning}" if github.in_actions(_env()) else f"warning: {warning}")
    elif durations:
        print(f"durations: {durations} ({'a store' if used.store else 'a flat file'}; estimates per arch)")
    notes: list[str] = []
    counts = _partition_counts(config, arches, stages, tree, used, notes)
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
    for note in notes:
        print(f"note: {note}")
    # `durations`: whether the stage jobs must plan on the same store (the workflow hands it on)
    if github.write_outputs({**route_outputs(result), "durations": "true" if used else "false"}, _env()):
        print("wrote arches, jobs, continue_on_error, bypass_fastfail and durations to $GITHUB_OUTPUT")
    return 0


def finish_command() -> int:
    """`invoke finish`: the workflow's last job; fails when any job failed or was cancelled."""
    from ci import workflows

    code, lines = github.needs_verdict(_env().get(workflows.NEEDS_ENV, ""))
    for line in lines:
        print(line)
    return code


def plan_command(event: str | None = None, arch: str | None = None, stage: str | None = None,
                 image: str | None = None, rocm: str | None = None, durations: str | None = None,
                 markdown: bool = False) -> int:
    """`invoke plan`: what each stage would do, with no Docker and no GPU; the tree is scanned once.
    With --event: the per-commit stages on every pool the event routes to (--arch: that pool).
    --markdown: for a Markdown page, each job's partitions as a chart."""
    from ci.durations import NO_DURATIONS, read_durations
    from ci.plan import build_plan, render_plan, render_plan_markdown
    from ci.routing import arches_for_event

    config = load_config()
    chosen = config.stage(stage) if stage else None  # a bad name fails before anything else is asked
    if event and not arch:
        arches, source = arches_for_event(config, event, None)
        resolutions = [ArchResolution(a, source) for a in arches]
        default = [s for s in config.stages.values() if not s.nightly]
    else:
        resolutions = [resolve_arch(config, flag=arch, env=_env())]
        default = list(config.stages.values())
    stages = [chosen] if chosen else default
    tree = _tree(config)
    given = (read_durations(_workspace() / durations, config.durations.history, durations)  # named: must be usable
             if durations else NO_DURATIONS)
    for resolution in resolutions:
        recorded = given.for_arch(resolution.arch.name, config.durations.history)
        for spec in stages:
            if not spec.jobs_for(resolution.arch.name):
                print(f"stage {spec.name}: no job on {resolution.arch.name}")
                continue
            plan = build_plan(config, spec.name, resolution, _today(), tree, image=image, rocm=rocm, recorded=recorded)
            for line in (render_plan_markdown(plan) if markdown else render_plan(plan)):
                print(line)
    return 0


def durations_command(action: str, sources: Sequence[str] = (), store: str | None = None, arch: str | None = None,
                      suite: str | None = None, markdown: bool = False) -> int:
    """`invoke durations update --from DIR... [--store FILE]`: merge run records into the store;
    `invoke durations report [--store FILE] [--arch A] [--suite S] [--markdown]`: drift per suite and arch."""
    from ci import history
    from ci.durations import DurationsError, read_store

    config = load_config()
    store_path = _in_workspace(store or config.durations.store_path)
    if store_path is None:
        raise UserError("durations: no store named (give --store FILE, or store_path in durations.yaml)")
    if action == "update":
        if not sources:
            raise UserError("durations update needs --from DIR (folders holding run records, durations.json)")
        if not all(sources):
            raise UserError("durations update --from: an empty name (give a folder holding run records)")
        return history.update(config, [_workspace() / s for s in sources], store_path, dt.datetime.now(dt.timezone.utc), sys.stdout)
    if action == "report":
        if sources:
            raise UserError("durations report reads the store (--store), not --from")
        if not store_path.exists():
            print(f"no store at {store_path}: nothing measured yet")
            return 0
        try:
            loaded = read_store(store_path, config.durations.history)
        except DurationsError as exc:
            raise UserError(str(exc)) from None
        if arch is not None:
            config.arch(arch)
        lines = (history.report_markdown if markdown else history.report_lines)(config, loaded, arch, suite)
        text = "\n".join(lines) + "\n"
        print(text, end="")
        if markdown:
            github.append_summary(text, _env())
        return 0
    raise UserError(f"durations {action!r}: allowed: update, report")


def stage_session(stage: str, runner_arch: str, posargs: Sequence[str], skip: Callable[[str], None]) -> int:
    """One parametrized nox session: run when `runner_arch` is this run's arch, else skip."""
    from ci import reproduce
    from ci.cli import parse_stage_args
    from ci.durations import NO_DURATIONS, read_durations
    from ci.partition import parse_partition
    from ci.plan import build_plan, render_plan
    from ci.stage import StageOptions, container_path, partition_label, run_stage

    config = load_config()
    spec = config.stage(stage)
    args = parse_stage_args(f"nox -s {spec.name.replace('-', '_')} --", posargs)
    partition_arg = parse_partition(args.partition, config.limits.partitions) if args.partition is not None else None
    if args.retries is not None and not 0 <= args.retries <= config.limits.retries:
        raise UserError(f"--retries {args.retries}: allowed: 0 to {config.limits.retries} (config/limits.yaml retries)")
    github.check_files(_env(), ("GITHUB_STEP_SUMMARY",))
    if args.replay is not None or args.only or args.failed or args.force:  # a CI job again, from its report
        return reproduce.replay_session(spec.name, runner_arch, args, skip, _env(), _workspace(), _today())
    resolution = resolve_arch(config, flag=args.arch, env=_env())
    if resolution.arch.name != runner_arch:
        skip(f"runner_arch {runner_arch} is not this run's arch {resolution.arch.name} (from {resolution.source})")
        return 0
    workspace = _workspace()
    durations = _in_workspace(args.durations)
    shown = args.durations
    image = image_override(args.image, _env())
    tree = _tree(config, args.test_root)
    if not spec.jobs_for(resolution.arch.name) and args.dry_run:
        print(f"stage {spec.name}: no job runs on {resolution.arch.name} (its jobs run on "
              f"{', '.join(sorted({a for j in spec.suites for a in j.arches}))}): nothing to plan")
        return 0
    given = read_durations(durations, config.durations.history, shown) if durations else NO_DURATIONS  # named: must be usable
    plan = build_plan(config, stage, resolution, _today(), tree, image=image, rocm=args.rocm, suite=args.suite,
                      partition_arg=partition_arg, recorded=given.for_arch(resolution.arch.name, config.durations.history))
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
        history=given,
    )
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return run_stage(config, plan, options, _env(), _today())


def pull_image_command(arch: str | None = None, image: str | None = None, rocm: str | None = None) -> int:
    """`invoke pull-image`: resolve (unless --image) and pull, LAN mirror first."""
    from ci import pull

    _image_operation(pull.pull_image, arch, image, rocm)
    return 0


def mirror_image_command(arch: str | None = None, image: str | None = None, rocm: str | None = None) -> int:
    """`invoke mirror-image`: pull from public, push to the LAN registry, verify the digest."""
    from ci import publish

    _image_operation(publish.mirror_image, arch, image, rocm)
    return 0


def _image_operation(operation, arch: str | None, image: str | None, rocm: str | None):
    from ci import pull, registry

    config = load_config()
    image = image_override(image, _env())
    if image:
        parse_image_name(image)  # bad input fails before any Docker call
    else:
        check_rocm(config.images, rocm)
    spec = None if image else _resolve(config, arch).arch
    # The tag list needs no Docker: a registry that gives none fails here, before any Docker call.
    today = _today()
    candidates = None if spec is None else pull.nightly_candidates(config, spec, rocm, today, _env())
    client = registry.connect(config.pull.probe_timeout_s)
    return operation(config, client, _env(), spec, image, rocm, today, candidates)


def _today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


# --- containers -------------------------------------------------------------------------------
def _containers(config: Config) -> Containers:
    from ci import container, registry

    return container.Containers(registry.connect(config.pull.probe_timeout_s), config.container, secrets=_env())


def _local_or_pulled(config: Config, client, arch, image: str | None) -> str:
    """The image to start: one named and present, else pulled (LAN first) as pull-image would."""
    from ci import pull, registry

    if image:
        name = parse_image_name(image)
        if registry.local_image(client, name) is not None:
            return str(name)
    return str(pull.pull_image(config, client, _env(), arch, image, None, _today()).image)


def start_container_command(arch: str | None = None, variant: str = "default", image: str | None = None,
                            gpu_clean: bool = True) -> int:
    """`invoke start-container`: GPU hygiene, then the CI container with everything from config."""
    from ci import container, gpu

    config = load_config()
    config.container.variant(variant)  # an unknown one is bad input before any work
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
    from ci import container

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
    from ci import gpu, registry

    config = load_config()
    client = None
    try:
        client = registry.connect(config.pull.probe_timeout_s)
    except ToolFailure as exc:
        print(f"no Docker Engine ({exc}); cleaning host processes only")
    gpu.gpu_clean(config.container, client, sys.stdout)
    return 0


def kernel_tests_command(pytest_args: Sequence[str] = (), arch: str | None = None, host: bool = False,
                         install: bool = True) -> int:
    """`invoke kernel-tests`: pytest on sgl_kernel_tests with known issues for the arch, JUnit XML;
    the words after `--` go to pytest exactly as typed; in the container, the checkout is installed
    first (as a stage does)."""
    from ci import container
    from ci.kernel_tests import pytest_argv

    config = load_config()
    spec_arch = _resolve(config, arch).arch
    reports = config.container.reports_dir
    if host:
        workspace = _workspace()
        try:
            check_output_dir(workspace / reports)
        except InputProblem as problem:
            raise UserError(f"reports folder {workspace / reports}: {problem}") from None
        argv = pytest_argv(sys.executable, str(container.TOOLKIT), spec_arch.name, str(workspace / reports), pytest_args)
        env = {**_env(), **container.exec_env(config.container, spec_arch),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(container.TOOLKIT), _env().get("PYTHONPATH")]))}
        return subprocess.run(argv, env=env, check=False).returncode
    argv = pytest_argv("python3", config.container.toolkit_target, spec_arch.name,
                       f"{config.container.workdir}/{reports}", pytest_args)
    containers = _containers(config)
    if install:
        _install_in_running(config, containers, spec_arch, ())
    return containers.exec(argv, container.exec_env(config.container, spec_arch), config.container.workdir)


def preflight_command(arch: str | None = None, suite: str | None = None, gpus: int | str | None = None) -> int:
    """`invoke preflight`: is this machine fit for a job (config/health.yaml)? GPUs (the suite's
    count, --gpus, else 1), leaked VRAM, ECC/RAS, disk, reachability; the guarded reset. Exit 3
    (infrastructure) when a check fails."""
    from ci import health, preflight

    if gpus is not None and not re.fullmatch(r"[1-9][0-9]*", str(gpus)):
        raise UserError(f"--gpus {gpus}: a whole number >= 1")
    gpus = int(gpus) if gpus is not None else None
    config = load_config()
    spec_arch = _resolve(config, arch).arch
    wanted = gpus if gpus is not None else next((j.gpus for s in config.stages.values() for j in s.suites if j.suite == suite), None)
    if suite and wanted is None and gpus is None:
        raise UserError(f"--suite {suite}: no job in stages.yaml runs it")
    client, no_engine = health.connect(config)
    if no_engine:
        print(f"note: {no_engine}; the engine's containers and data root are not asked")
    report = preflight.run_preflight(config, spec_arch, wanted or 1, str(_workspace()), _env(), health.engine_host(client, config))
    for line in report.lines():
        print(line)
    github.append_summary(report.markdown(), _env())
    print(f"preflight: {'OK' if report.ok else 'INFRASTRUCTURE FAILURE: ' + report.failure}")
    return ExitCode.OK if report.ok else ExitCode.INFRASTRUCTURE


def verdict_command(failure_class: str = "") -> int:
    """`invoke verdict --failure-class C`: the workflow's last word on a stage step it did not
    retry: exits with that class's code (an empty class: the stage ended before classifying itself)."""
    from ci.outcome import FailureClass

    if not failure_class:
        print("the stage step ended without a failure class (it failed before classifying itself)")
        return ExitCode.FAILED
    try:
        found = FailureClass(failure_class)
    except ValueError:
        raise UserError(f"--failure-class {failure_class!r}: allowed: {', '.join(c.value for c in FailureClass)}") from None
    print(f"stage: {found.headline} (exit code {found.exit_code})")
    return found.exit_code


def build_image_command(arch: str | None = None, rocm: str | None = None, push: bool = True) -> int:
    """`invoke build-image`: build today's nightly for the arch, push it, output its name."""
    from ci import build, registry

    config = load_config()
    github.check_files(_env(), ("GITHUB_OUTPUT",))
    spec_arch = _resolve(config, arch).arch
    workspace = _workspace()
    build.build_image(config, registry.connect(config.pull.probe_timeout_s), _env(), spec_arch, rocm, workspace,
                      _today(), push=push)
    return 0


def workflows_command(check: bool = False, root: str | None = None) -> int:
    """`invoke workflows`: render .github/ from config into this toolkit (or --root); --check fails
    when the files differ."""
    from ci import workflows
    from ci.container import TOOLKIT

    config = load_config()
    if root is not None and not Path(root).is_dir():
        raise UserError(f"--root {root}: not a directory (allowed: a folder holding .github/)")
    base = Path(root) if root is not None else TOOLKIT
    if check:
        differ = workflows.stale(config, base)
        for path in differ:
            print(f"{path} differs from what config renders: run `invoke workflows`")
        return 1 if differ else 0
    for path in workflows.write(config, base):
        print(f"wrote {path}")
    return 0


# --- installing the checkout ------------------------------------------------------------------
def install_deps_command(arch: str | None = None, skip: Sequence[str] = ()) -> int:
    """`invoke install-deps`: install the checkout in the running CI container and prove the
    tests will import it; exit code 3 (infrastructure) when a step or the proof fails."""
    from ci import container, install

    config = load_config()
    skip = install.check_skip(config.install, skip or ())
    containers = _containers(config)
    running = containers.find()
    if running is None:
        raise ToolFailure(f"no container {config.container.name}: run `invoke start-container` first")
    started_for = running.labels.get(f"{container.LABEL}.arch") if not arch else None
    spec_arch = config.arch(started_for) if started_for else _resolve(config, arch).arch
    result = install.install_checkout(config, containers, spec_arch, install.target_of(running, config), _env(),
                                      sys.stdout, skip)
    github.append_summary(result.markdown(), _env())
    return ExitCode.OK if result.ok else ExitCode.INFRASTRUCTURE


def _install_in_running(config: Config, containers: Containers, arch, skip: Sequence[str]) -> None:
    from ci import install

    running = containers.find()
    if running is None:
        raise ToolFailure(f"no container {config.container.name}: run `invoke start-container` first")
    result = install.install_checkout(config, containers, arch, install.target_of(running, config), _env(), sys.stdout, skip)
    if not result.ok:
        raise InfraFailure(result.failure)
