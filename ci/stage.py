"""One CI stage end to end: plan, preflight (ci.preflight), pull the image (LAN first), GPU hygiene,
start the container, install the checkout in it (ci.install), the collective smoke test of a
multi-GPU job (ci.smoke), run the partition's files (ci.runner), stop it whatever happens, write the
reports, and exit with the code of the failure class (ci.outcome: 3 infrastructure, 130 cancelled)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

import docker.errors
import requests

from ci import github, gpu, health, install, pull, replay
from ci.config import OVERRIDE_ENV, Config
from ci.container import Containers, HostView, build_spec, exec_env
from ci.durations import NO_DURATIONS, Durations, record_json
from ci.errors import ExitCode, Terminated, ToolFailure, UserError, sigterm_raises
from ci.history import drift_markdown, run_record, stage_drift, warning_lines
from ci.inputs import InputProblem, read_text
from ci.known_issues import touching
from ci.outcome import JUNIT_PROPERTY, JUNIT_REASON, FailureClass, Outcome, classify
from ci.plan import StagePlan, job_chart
from ci.report import counts, junit_xml, summary_markdown
from ci.runner import FileResult, FileRuns, FileStatus, PlannedFile, RunPlan
from ci.schema import MAX_CONFIG_BYTES
from ci.secrets import scrub
from ci.secrets import values as secret_values
from ci.smoke import run_smoke
from ci.thresholds import LOG_ENV
from ci.untrusted import UnsafePath, read_under, records_from_text, results_from_text, write_under


@dataclass(frozen=True)
class StageOptions:
    workspace: Path
    report_dir: Path
    retries: int
    continue_on_error: bool
    durations: Path | None = None
    history: Durations = NO_DURATIONS  # what --durations held: drift is judged on it plus this run
    pull_image: Callable[..., pull.PullOutcome] | None = None  # None: pull.pull_image; a replay pins a digest (ci.reproduce)


def partition_label(plan: StagePlan) -> str:
    picked = [f"{j.job.suite}-{j.selected}of{j.total}" for j in plan.jobs if j.selected]
    return plan.stage.name + ("-" + "-".join(picked) if picked else "")


def planned_files(config: Config, plan: StagePlan, workspace: Path) -> tuple[PlannedFile, ...]:
    """The runner's view of the plan: each unit with its job's per-file timeout. A unittest file
    that a known issue touches runs under pytest, so the plugin can skip or xfail that one test
    for this arch (pytest runs unittest.TestCase classes as they are)."""
    arch = plan.resolution.arch.name
    workdir = config.container.workdir
    files = []
    for job in plan.jobs:
        for unit in job.units_to_run():
            if unit.style == "command":
                cwd = container_path(workspace, workspace / unit.cwd, workdir)
                files.append(PlannedFile(unit.name, unit.seconds, "command", job.per_file_timeout_s, unit.argv, cwd, dict(unit.env)))
                continue
            style = "pytest" if touching(config.known_issues, unit.file, arch) else unit.style
            files.append(PlannedFile(unit.name, unit.est_time, style, unit.timeout_s or job.per_file_timeout_s,
                                     selectors=unit.selectors))
    return tuple(files)


def variant_of(plan: StagePlan) -> str:
    variants = sorted({j.job.variant for j in plan.jobs})
    if len(variants) > 1:
        raise UserError(f"{plan.stage.name}: its jobs on {plan.resolution.arch.name} need different containers "
                        f"({', '.join(variants)}): run one at a time with --suite")
    return variants[0]


def file_runs(config: Config) -> FileRuns:
    """config/runner.yaml as the runner gets it in plan.json (it reads no config itself)."""
    return FileRuns(**asdict(config.runner))


def container_path(workspace: Path, host_path: Path, workdir: str) -> str:
    """Where a path under the workspace appears in the container (the workspace is mounted at workdir)."""
    try:
        relative = host_path.resolve().relative_to(workspace.resolve())
    except ValueError:
        raise UserError(f"{host_path} is not under the workspace {workspace}: the container cannot see it") from None
    return str(PurePosixPath(workdir) / relative.as_posix())


def run_stage(config: Config, plan: StagePlan, options: StageOptions, env: Mapping[str, str],
              today: dt.date, out: TextIO = sys.stdout) -> int:
    files = planned_files(config, plan, options.workspace)
    disabled = [f for job in plan.jobs for f in job.disabled]
    variant = variant_of(plan)
    report_dir = options.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    workdir = config.container.workdir
    arch = plan.resolution.arch
    run_plan = RunPlan(
        stage=partition_label(plan),
        test_root=container_path(options.workspace, plan.test_root, workdir),
        report_dir=container_path(options.workspace, report_dir, workdir),
        files=files,
        per_file_timeout_s=max(j.per_file_timeout_s for j in plan.jobs),
        stage_timeout_s=plan.timeout_minutes * 60,
        retries=options.retries,
        continue_on_error=options.continue_on_error,
        python="python3",
        arch=arch.name,
        kill_grace_s=plan.stage.kill_grace_s,
        runs=file_runs(config),
    )
    write_under(options.workspace, report_dir / "plan.json", json.dumps(asdict(run_plan), indent=1))
    (report_dir / "results.json").unlink(missing_ok=True)
    (report_dir / "thresholds.jsonl").unlink(missing_ok=True)
    runner_code = None
    installed = None
    (report_dir / "install.json").unlink(missing_ok=True)
    outcome = None
    checked = smoked = None  # the preflight's report, the smoke test's result
    infra = cancelled = lost = None  # reasons that decide the failure class (ci.outcome)
    signal_name = ""
    interrupt: BaseException | None = None
    client = None
    written: list[int] = []  # the exit code, once the reports are written

    def report_now(exc: BaseException, pulled, done_install, smoke) -> None:
        name = "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
        blocked = _block_signals()
        try:
            written.append(_report(config, plan, options, env, today, out, run_plan, files, disabled, client, pulled,
                                   done_install, None, checked, smoke, None, f"interrupted by {name}", None, name))
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    if files:
        try:
            with sigterm_raises():  # a cancelled workflow's SIGTERM still leaves reports
                client, no_engine = health.connect(config)
                checked = health.stage_preflight(config, arch, health.job_gpus(plan), str(options.workspace), env,
                                                 health.engine_host(client, config), out)
                infra = f"preflight failed: {checked.failure}" if not checked.ok else no_engine
                if not infra:
                    outcome, installed, runner_code, smoked, lost = _execute(
                        config, plan, run_plan, options, env, today, out, client, arch, variant, report_dir, workdir,
                        report_now)
                    infra = smoked.reason if smoked and not smoked.ok else None
        except ToolFailure as exc:  # pull, hygiene, container start: the machine's failure, not the tests'
            infra = str(exc).splitlines()[0]
        except (KeyboardInterrupt, Terminated) as exc:
            interrupt = exc
            signal_name = "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
            cancelled = f"interrupted by {signal_name}"
    if written:  # written before the container stopped
        raise interrupt if interrupt is not None else AssertionError("reports written without an interrupt")
    blocked = _block_signals() if cancelled else set()  # a second signal must not cut the reports short
    try:
        code = _report(config, plan, options, env, today, out, run_plan, files, disabled, client, outcome, installed,
                       runner_code, checked, smoked, infra, cancelled, lost, signal_name)
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
    if interrupt is not None:  # reports written, marked cancelled: the door says so in one line (130/143)
        raise interrupt
    return code


def _report(config: Config, plan: StagePlan, options: StageOptions, env: Mapping[str, str], today: dt.date,
            out: TextIO, run_plan: RunPlan, files, disabled, client, outcome, installed, runner_code, checked, smoked,
            infra, cancelled, lost, signal_name: str) -> int:
    """The stage's reports from what happened and what the runner left: the run record, JUnit with
    the failure class, the summary, the verdict. Written without following links (the container
    could plant one) and scrubbed of every secret; the exit code is the class's."""
    workspace, report_dir, arch = options.workspace, options.report_dir, plan.resolution.arch
    hidden = secret_values(env)
    results = _results(workspace, report_dir, run_plan, runner_code, installed, infra or cancelled)
    for result in results:  # what test output said goes into reports: never a secret
        result.reason = scrub(result.reason, hidden)
        for attempt in result.attempts:
            attempt.reason = scrub(attempt.reason, hidden)
    record = run_record(plan, run_plan.stage, results, str(outcome.image) if outcome else "",
                        (outcome.digest or "") if outcome else "", env, dt.datetime.now(dt.timezone.utc),
                        plan.rocm or config.images.rocm)
    write_under(workspace, report_dir / "durations.json", record_json(record))
    replayable = replay.build_record(config, plan, run_plan, results, outcome, workspace, report_dir, env,
                                     dt.datetime.now(dt.timezone.utc))
    write_under(workspace, report_dir / replay.FILE, replay.record_json(replayable))
    drifting = stage_drift(config, options.history, record)
    for warning in warning_lines(drifting, github.in_actions(env)):
        print(warning, file=out)
    notes = [*known_issue_notes(config, arch.name, [f.path.split("::", 1)[0] for f in files], today), *plan.warnings]
    if cancelled:
        notes.insert(0, f"**INTERRUPTED**: {cancelled}; files not run to an end are marked not run")
    if runner_code not in (None, 0, 1):
        notes.append(f"the runner itself exited with {runner_code}")
    if installed is not None and not installed.ok:  # not the tests' fault: a class of its own
        infra = f"{installed.failure}; no test file ran"
    stuck = (health.stuck_gpu(config, health.engine_host(client, config))
             if any(r.status is FileStatus.TIMEOUT for r in results) and not (infra or cancelled or lost) else None)
    judged = classify(health.attempted(results), config.health.classify.gpu_hang_exit_codes, infrastructure=infra,
                      cancelled=cancelled, stuck_gpu=stuck, lost_container=lost)
    if runner_code not in (None, 0, 1) and judged.failure_class is FailureClass.PASSED:
        judged = Outcome(FailureClass.TEST, f"the runner itself exited with {runner_code}")
    code, line = judged.exit_code, scrub(judged.verdict(counts(results)), hidden)
    if signal_name == "SIGTERM":
        code = ExitCode.TERMINATED  # as a shell reports a SIGTERM: 128 + 15
    properties = {JUNIT_PROPERTY: judged.failure_class.value, JUNIT_REASON: scrub(judged.reason, hidden),
                  **dict(replay.junit_properties(replayable))}  # the replay record, as properties
    write_under(workspace, report_dir / "junit.xml", junit_xml(run_plan.stage, results, disabled, properties))
    health.publish(judged, env)
    sections = [part.markdown() for part in (checked, installed, smoked) if part is not None]
    records, malformed = _records(workspace, report_dir / "thresholds.jsonl")
    if malformed:
        notes.append(f"{malformed} malformed threshold record(s) left out")
    summary = summary_markdown(f"{run_plan.stage} on {arch.name}", results, disabled, records, notes, sections, line)
    summary += "".join(f"\n{drift_markdown(drifting)}" if drifting else "")
    summary += "".join(f"\n### Partitions: {j.job.suite}\n\n{job_chart(plan, j)}\n" for j in plan.jobs)
    summary += replay.summary_markdown(replayable)  # last: the one line that replays this job
    summary = scrub(summary, hidden)
    write_under(workspace, report_dir / "summary.md", summary)
    github.append_summary(summary, env)
    print(f"reports: {report_dir} (junit.xml, durations.json, replay.json, summary.md{', install.json' if installed else ''})", file=out)
    print(f"{run_plan.stage}: {line}", file=out, flush=True)
    return code


def _block_signals() -> set[int]:
    wanted: set[int] = {signal.SIGINT, signal.SIGTERM}
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    except (ValueError, OSError):
        return set()
    return wanted


def _execute(config: Config, plan: StagePlan, run_plan: RunPlan, options: StageOptions, env: Mapping[str, str],
             today: dt.date, out: TextIO, client, arch, variant: str, report_dir: Path, workdir: str,
             on_interrupt=None):
    """Pull, hygiene, container, install, smoke test (multi-GPU jobs), the runner. Returns the pull
    outcome, the install result, the runner's exit code, the smoke result and a lost container."""
    installed = smoked = runner_code = lost = None
    image = plan.images[0] if plan.image_overridden else None
    with github.group("image", env, out):
        outcome = (options.pull_image or pull.pull_image)(config, client, env, arch, str(image) if image else None,
                                                          plan.rocm, today)
    containers = Containers(client, config.container, out)
    with github.group("GPU hygiene", env, out):
        gpu.gpu_clean(config.container, client, out)
    spec = build_spec(config.container, arch, variant, str(outcome.image), HostView(env))
    with containers.running(spec, env) as started:
        installed = install.install_checkout(config, containers, arch, install.target_of(started, config, str(outcome.image), outcome.digest),
                                             env, out)
        write_under(options.workspace, report_dir / "install.json", installed.to_json())
        gpus = health.job_gpus(plan)
        if installed.ok and gpus >= config.health.smoke.min_gpus:
            with github.group("collective smoke test", env, out):
                smoked = run_smoke(containers, config.health.smoke, gpus, config.container.toolkit_target, exec_env(config.container, arch), out)
                print(f"smoke test: {smoked.reason}", file=out, flush=True)
        if installed.ok and (smoked is None or smoked.ok):
            watchdog = threading.Timer(run_plan.stage_timeout_s + plan.stage.hard_deadline_margin_s, containers.stop)
            watchdog.daemon = True
            watchdog.start()
            try:
                runner_env = {**exec_env(config.container, arch),
                              LOG_ENV: container_path(options.workspace, report_dir / "thresholds.jsonl", workdir)}
                if env.get(OVERRIDE_ENV):  # the same config inside, for thresholds and known issues
                    runner_env[OVERRIDE_ENV] = _override_inside(options.workspace, report_dir, env[OVERRIDE_ENV], workdir)
                try:
                    runner_code = containers.exec(["python3", "-m", "ci.runner", container_path(options.workspace, report_dir / "plan.json", workdir)],
                                                  runner_env, workdir, getattr(out, "buffer", None))
                except (docker.errors.APIError, ToolFailure, requests.RequestException) as exc:
                    lost = f"the exec of the runner failed ({type(exc).__name__}: {str(exc)[:160]})"
                except (KeyboardInterrupt, Terminated) as exc:
                    if on_interrupt is not None:  # reports first: a cancelled job may be killed during the stop
                        on_interrupt(exc, outcome, installed, smoked)
                    raise
                lost = lost or health.lost_container(containers)
            finally:
                watchdog.cancel()
    return outcome, installed, runner_code, smoked, lost


def known_issue_notes(config: Config, arch: str, paths: list[str], today: dt.date) -> list[str]:
    """The known issues in force for these files on this arch; expired ones said loudly."""
    notes = []
    for issue in {i.test: i for p in paths for i in touching(config.known_issues, p, arch)}.values():
        expired = issue.expires is not None and issue.expires < today
        notes.append(("**EXPIRED** " if expired else "") + f"known issue ({issue.mode} on {arch}): `{issue.test}`: "
                     f"{issue.reason} ({issue.link}" + (f", expires {issue.expires})" if issue.expires else ")"))
    return notes


def _results(workspace: Path, report_dir: Path, run_plan: RunPlan, runner_code: int | None,
             installed: install.InstallResult | None = None, stopped: str | None = None) -> list[FileResult]:
    """The runner's results, read without following links and checked field by field; anything
    missing or malformed reports every file as not run (the class then says why)."""
    why = "nothing to run" if runner_code is None else f"the runner left no results (exit code {runner_code})"
    if installed is not None and not installed.ok:
        why = f"not run: {installed.failure}"
    elif stopped:
        why = f"{stopped} before it ran"
    try:
        text = read_under(workspace, report_dir / "results.json")
        if text is not None:
            results = results_from_text(text)
            if stopped:
                for result in results:
                    if result.status is FileStatus.NOT_RUN and not result.reason:
                        result.reason = f"{stopped} before it ran to an end"
            return results
    except (UnsafePath, ValueError) as exc:
        why = f"the runner's results could not be read: {exc}"
    return [FileResult(f.path, f.est_time, FileStatus.NOT_RUN, reason=why) for f in run_plan.files]


def _records(workspace: Path, path: Path) -> tuple[list, int]:
    try:
        text = read_under(workspace, path)
    except UnsafePath:
        return [], 1
    return records_from_text(text) if text else ([], 0)


def _override_inside(workspace: Path, report_dir: Path, override: str, workdir: str) -> str:
    """The config override as the container reads it: a copy of what the host read, in the report
    folder (the host never reads back a file the container could have changed)."""
    copy = report_dir / "config-override.yaml"
    try:
        text = read_text(override, MAX_CONFIG_BYTES)
    except InputProblem as problem:
        raise UserError(f"{OVERRIDE_ENV}={override}: cannot read it: {problem}") from None
    write_under(workspace, copy, text)
    return container_path(workspace, copy, workdir)
