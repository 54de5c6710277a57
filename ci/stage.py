"""One CI stage end to end: plan, pull the image (LAN first), GPU hygiene, start the container,
install the checkout in it (ci.install), run the partition's files (ci.runner), stop it whatever
happens, write the reports, and exit with the code the results give (3: the install failed)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

from ci import github, gpu, install, pull, registry, replay
from ci.config import OVERRIDE_ENV, Config
from ci.container import Containers, HostView, build_spec, exec_env
from ci.durations import NO_DURATIONS, Durations, record_json
from ci.errors import ExitCode, UserError
from ci.history import drift_markdown, run_record, stage_drift, warning_lines
from ci.known_issues import touching
from ci.plan import StagePlan, job_chart
from ci.report import summary_markdown, verdict, write_reports
from ci.runner import FileResult, PlannedFile, RunPlan, read_results
from ci.thresholds import LOG_ENV, read_records


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
    run_plan.dump(report_dir / "plan.json")
    (report_dir / "results.json").unlink(missing_ok=True)
    (report_dir / "thresholds.jsonl").unlink(missing_ok=True)
    runner_code = None
    installed = None
    (report_dir / "install.json").unlink(missing_ok=True)
    outcome = None
    if files:
        client = registry.connect(config.pull.probe_timeout_s)
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
            (report_dir / "install.json").write_text(installed.to_json())
            if installed.ok:
                watchdog = threading.Timer(run_plan.stage_timeout_s + plan.stage.hard_deadline_margin_s, containers.stop)
                watchdog.daemon = True
                watchdog.start()
                try:
                    runner_env = {**exec_env(config.container, arch),
                                  LOG_ENV: container_path(options.workspace, report_dir / "thresholds.jsonl", workdir)}
                    if env.get(OVERRIDE_ENV):  # the same config inside, for thresholds and known issues
                        runner_env[OVERRIDE_ENV] = container_path(options.workspace, Path(env[OVERRIDE_ENV]), workdir)
                    runner_code = containers.exec(["python3", "-m", "ci.runner", container_path(options.workspace, report_dir / "plan.json", workdir)],
                                                  runner_env, workdir, getattr(out, "buffer", None))
                finally:
                    watchdog.cancel()
    results = _results(report_dir, run_plan, runner_code, installed)
    write_reports(report_dir, run_plan.stage, results, disabled, {})
    record = run_record(plan, run_plan.stage, results, str(outcome.image) if outcome else "",
                        (outcome.digest or "") if outcome else "", env, dt.datetime.now(dt.timezone.utc),
                        plan.rocm or config.images.rocm)
    (report_dir / "durations.json").write_text(record_json(record))
    replayable = replay.build_record(config, plan, run_plan, results, outcome, options.workspace, report_dir, env,
                                     dt.datetime.now(dt.timezone.utc))
    replay.write(report_dir, replayable)  # replay.json, and the same data as properties in junit.xml
    drifting = stage_drift(config, options.history, record)
    for warning in warning_lines(drifting, github.in_actions(env)):
        print(warning, file=out)
    code, line = verdict(results)
    notes = [*known_issue_notes(config, arch.name, [f.path.split("::", 1)[0] for f in files], today), *plan.warnings]
    if runner_code not in (None, 0, 1):
        notes.append(f"the runner itself exited with {runner_code}")
        code = 1
    if installed is not None and not installed.ok:  # not the tests' fault: a class of its own
        code, line = ExitCode.INFRASTRUCTURE, f"INFRASTRUCTURE FAILURE: {installed.failure}; no test file ran"
    summary = summary_markdown(f"{run_plan.stage} on {arch.name}", results, disabled,
                               read_records(report_dir / "thresholds.jsonl"), notes,
                               [installed.markdown()] if installed else [], line)
    summary += "".join(f"\n{drift_markdown(drifting)}" if drifting else "")
    summary += "".join(f"\n### Partitions: {j.job.suite}\n\n{job_chart(plan, j)}\n" for j in plan.jobs)
    summary += replay.summary_markdown(replayable)  # last: the one line that replays this job
    (report_dir / "summary.md").write_text(summary)
    github.append_summary(summary, env)
    print(f"reports: {report_dir} (junit.xml, durations.json, replay.json, summary.md{', install.json' if installed else ''})", file=out)
    print(f"{run_plan.stage}: {line}", file=out, flush=True)
    return code


def known_issue_notes(config: Config, arch: str, paths: list[str], today: dt.date) -> list[str]:
    """The known issues in force for these files on this arch; expired ones said loudly."""
    notes = []
    for issue in {i.test: i for p in paths for i in touching(config.known_issues, p, arch)}.values():
        expired = issue.expires is not None and issue.expires < today
        notes.append(("**EXPIRED** " if expired else "") + f"known issue ({issue.mode} on {arch}): `{issue.test}`: "
                     f"{issue.reason} ({issue.link}" + (f", expires {issue.expires})" if issue.expires else ")"))
    return notes


def _results(report_dir: Path, run_plan: RunPlan, runner_code: int | None,
             installed: install.InstallResult | None = None) -> list[FileResult]:
    try:
        return read_results(report_dir)
    except (OSError, json.JSONDecodeError, KeyError):
        why = "nothing to run" if runner_code is None else f"the runner left no results (exit code {runner_code})"
        if installed is not None and not installed.ok:
            why = f"not run: {installed.failure}"
        return [FileResult(f.path, f.est_time, "not-run", reason=why) for f in run_plan.files]
