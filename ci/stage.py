"""One CI stage end to end: plan, pull the image (LAN first), GPU hygiene, start the container,
run the partition's files in it (ci.runner), stop it whatever happens, write the reports, and
exit with the code the results give."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

from ci import github, gpu, pull, registry
from ci.config import OVERRIDE_ENV, Config
from ci.container import Containers, HostView, build_spec, exec_env
from ci.errors import ExitCodeUnknown, Terminated, UserError
from ci.known_issues import touching
from ci.partition import read_durations
from ci.plan import StagePlan
from ci.report import durations, junit_xml, summary_markdown, verdict
from ci.runner import FileResult, PlannedFile, RunPlan
from ci.inputs import InputProblem, read_text
from ci.schema import MAX_CONFIG_BYTES
from ci.secrets import scrub
from ci.secrets import values as secret_values
from ci.thresholds import LOG_ENV
from ci.untrusted import UnsafePath, read_under, records_from_text, results_from_text, write_under



@dataclass(frozen=True)
class StageOptions:
    workspace: Path
    report_dir: Path
    retries: int
    continue_on_error: bool
    durations: Path | None = None


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
            style = "pytest" if touching(config.known_issues, unit.name, arch) else unit.style
            files.append(PlannedFile(unit.name, unit.est_time, style, job.per_file_timeout_s))
    return tuple(files)


def variant_of(plan: StagePlan) -> str:
    variants = sorted({j.job.variant for j in plan.jobs})
    if len(variants) > 1:
        raise UserError(f"{plan.stage.name}: its jobs on {plan.resolution.arch.name} need different containers "
                        f"({', '.join(variants)}): run one at a time with --suite")
    return variants[0]


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
    )
    write_under(options.workspace, report_dir / "plan.json", json.dumps(asdict(run_plan), indent=1))
    (report_dir / "results.json").unlink(missing_ok=True)
    (report_dir / "thresholds.jsonl").unlink(missing_ok=True)
    report = _Report(config, plan, options, env, today, out, run_plan, files, disabled)
    try:
        if files:
            client = registry.connect(config.pull.probe_timeout_s)
            image = plan.images[0] if plan.image_overridden else None
            with github.group("image", env, out):
                outcome = pull.pull_image(config, client, env, arch, str(image) if image else None, plan.rocm, today)
            containers = Containers(client, config.container, out)
            with github.group("GPU hygiene", env, out):
                gpu.gpu_clean(config.container, client, out)
            spec = build_spec(config.container, arch, variant, str(outcome.image), HostView(env))
            with containers.running(spec, env):
                watchdog = threading.Timer(run_plan.stage_timeout_s + plan.stage.hard_deadline_margin_s, containers.stop)
                watchdog.daemon = True
                watchdog.start()
                try:
                    runner_env = {**exec_env(config.container, arch),
                                  LOG_ENV: container_path(options.workspace, report_dir / "thresholds.jsonl", workdir)}
                    if env.get(OVERRIDE_ENV):  # the same config inside, for thresholds and known issues
                        runner_env[OVERRIDE_ENV] = _override_inside(options.workspace, report_dir, env[OVERRIDE_ENV], workdir)
                    report.runner_code = containers.exec(
                        ["python3", "-m", "ci.runner", container_path(options.workspace, report_dir / "plan.json", workdir)],
                        runner_env, workdir, getattr(out, "buffer", None))
                except ExitCodeUnknown as exc:
                    report.notes.append(str(exc))
                except (KeyboardInterrupt, Terminated) as exc:
                    report.write(interrupted=exc)  # before the stop: a cancelled job may be killed during it
                    raise
                finally:
                    watchdog.cancel()
    except (KeyboardInterrupt, Terminated) as exc:
        if not report.written:
            report.write(interrupted=exc)
        raise
    return report.write()


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


@dataclass
class _Report:
    """The stage's reports from what the runner left: JUnit, durations, summary, the verdict."""

    config: Config
    plan: StagePlan
    options: StageOptions
    env: Mapping[str, str] = field(repr=False)
    today: dt.date
    out: TextIO
    run_plan: RunPlan
    files: tuple[PlannedFile, ...]
    disabled: list
    runner_code: int | None = None
    notes: list[str] = field(default_factory=list)
    written: bool = False

    def write(self, interrupted: BaseException | None = None) -> int:
        blocked = _block_signals() if interrupted is not None else set()  # a second signal must not cut the reports short
        try:
            return self._write(interrupted)
        finally:
            self.written = True
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    def _write(self, interrupted: BaseException | None) -> int:
        workspace, report_dir, arch = self.options.workspace, self.options.report_dir, self.plan.resolution.arch
        hidden = secret_values(self.env)
        why_stopped = f"interrupted by {getattr(interrupted, 'signal_name', 'SIGINT')}" if interrupted is not None else ""
        results = _results(workspace, report_dir, self.run_plan, self.runner_code, self.notes, why_stopped)
        if why_stopped:
            for result in results:
                if result.status == "not-run" and not result.reason:
                    result.reason = f"{why_stopped} before it ran to an end"
        for result in results:  # what test output said goes into reports: never a secret
            result.reason = scrub(result.reason, hidden)
            for attempt in result.attempts:
                attempt.reason = scrub(attempt.reason, hidden)
        write_under(workspace, report_dir / "junit.xml", junit_xml(self.run_plan.stage, results, self.disabled))
        write_under(workspace, report_dir / "durations.json",
                    json.dumps(durations(results, read_durations(self.options.durations)), indent=1))
        code, line = verdict(results)
        plain_line = line
        notes = [*known_issue_notes(self.config, arch.name, [f.path for f in self.files], self.today),
                 *self.plan.warnings, *self.notes]
        if why_stopped:
            notes.insert(0, f"**INTERRUPTED**: {why_stopped}; files not run to an end are marked not run")
            code, line = 1, f"INTERRUPTED ({why_stopped}): " + line.split(": ", 1)[-1]
        if self.runner_code not in (None, 0, 1):
            notes.append(f"the runner itself exited with {self.runner_code}")
            code = 1
        if self.notes:
            code = 1  # the runner's results or exit code could not be trusted
        records, malformed = _records(workspace, report_dir / "thresholds.jsonl")
        if malformed:
            notes.append(f"{malformed} malformed threshold record(s) left out")
        summary = summary_markdown(f"{self.run_plan.stage} on {arch.name}", results, self.disabled, records, notes)
        summary = scrub(summary.replace(f"**{plain_line}**", f"**{line}**", 1), hidden)  # the headline says interrupted
        write_under(workspace, report_dir / "summary.md", summary)
        github.append_summary(summary, self.env)
        print(f"reports: {report_dir} (junit.xml, durations.json, summary.md)", file=self.out)
        print(f"{self.run_plan.stage}: {line}", file=self.out, flush=True)
        return code


def _block_signals() -> set[int]:
    wanted = {signal.SIGINT, signal.SIGTERM}
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    except (ValueError, OSError):
        return set()
    return wanted


def known_issue_notes(config: Config, arch: str, paths: list[str], today: dt.date) -> list[str]:
    """The known issues in force for these files on this arch; expired ones said loudly."""
    notes = []
    for issue in {i.test: i for p in paths for i in touching(config.known_issues, p, arch)}.values():
        expired = issue.expires is not None and issue.expires < today
        notes.append(("**EXPIRED** " if expired else "") + f"known issue ({issue.mode} on {arch}): `{issue.test}`: "
                     f"{issue.reason} ({issue.link}" + (f", expires {issue.expires})" if issue.expires else ")"))
    return notes


def _results(workspace: Path, report_dir: Path, run_plan: RunPlan, runner_code: int | None,
             problems: list[str], stopped: str = "") -> list[FileResult]:
    """The runner's results, read without following links and checked field by field; anything
    missing or malformed reports every file as not run (and the stage as failed)."""
    if stopped:
        why = f"{stopped} before it ran"
    elif runner_code is None and not problems:
        why = "nothing to run"
    else:
        why = f"the runner left no results (exit code {runner_code})"
    try:
        text = read_under(workspace, report_dir / "results.json")
        if text is not None:
            return results_from_text(text)
    except (UnsafePath, ValueError) as exc:
        problems.append(f"the runner's results could not be read: {exc}")
        why = "the runner's results could not be read"
    return [FileResult(f.path, f.est_time, "not-run", reason=why) for f in run_plan.files]


def _records(workspace: Path, path: Path) -> tuple[list, int]:
    try:
        text = read_under(workspace, path)
    except UnsafePath:
        return [], 1
    return records_from_text(text) if text else ([], 0)
