"""The durations history at work: a stage run's record from its plan and results, the drift a
stage reports for its own files, `invoke durations update` (merge records into the store) and
`invoke durations report` (drift per suite and arch, as text or Markdown with a chart)."""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ci.config import Config
from ci.durations import (
    EMPTY_STORE,
    Drift,
    Durations,
    DurationsError,
    RunRecord,
    Store,
    UnitRecord,
    drift,
    estimates,
    find_records,
    merge,
    read_records,
    read_store,
    reference_time,
    store_json,
    with_record,
)
from ci.gantt import measured_chart
from ci.plan import StagePlan
from ci.runner import FileResult, FileStatus


def run_id(env: Mapping[str, str], finished: dt.datetime) -> str:
    """The Actions run (and attempt), else the time: what makes a record count once."""
    if env.get("GITHUB_RUN_ID"):
        return f"{env['GITHUB_RUN_ID']}-{env.get('GITHUB_RUN_ATTEMPT', '1')}"
    return f"local-{finished.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


def run_record(plan: StagePlan, stage_label: str, results: Sequence[FileResult], image: str, digest: str,
               env: Mapping[str, str], finished: dt.datetime, rocm: str) -> RunRecord:
    """What this run measured, per unit: a shard's time is shared among its classes by their
    estimates (exactly its own when it holds one class)."""
    units = {u.name: (job, u) for job in plan.jobs for u in job.units.values()}
    file_est: dict[tuple[str, str], float] = defaultdict(float)
    for job in plan.jobs:
        for u in job.units.values():
            if u.selectors:
                file_est[(job.job.suite, u.file)] += u.est_time
    records = []
    for r in results:
        if r.status is FileStatus.DISABLED or r.path not in units:
            continue
        job, unit = units[r.path]
        passed = [a for a in r.attempts if a.verdict is FileStatus.PASSED]
        seconds = passed[-1].seconds if r.status is FileStatus.PASSED and passed else r.seconds
        classes: dict[str, float] = {}
        if unit.selectors:
            weights = list(unit.weights) if len(unit.weights) == len(unit.selectors) else [1.0] * len(unit.selectors)
            total = sum(weights) or 1.0
            classes = {c: seconds * w / total for c, w in zip(unit.selectors, weights)}
        est = file_est[(job.job.suite, unit.file)] if unit.selectors else unit.est_time
        records.append(UnitRecord(r.path, job.job.suite, est, r.status, seconds, classes))
    return RunRecord(run_id(env, finished), stage_label, plan.resolution.arch.name, rocm, image, digest, finished,
                     tuple(records))


def stage_drift(config: Config, durations: Durations, record: RunRecord) -> list[Drift]:
    """Drift of this run's files: the history it was given plus what it just measured."""
    store = with_record(durations, record, record.finished, config.durations.history)
    return drift(store, record.finished, config.durations.history, config.durations.drift, record.arch,
                 [u.name for u in record.units])


def drift_markdown(found: Sequence[Drift]) -> str:
    if not found:
        return ""
    rows = ["| file | arch | est_time | measured | ratio | runs | suggested est_time |", "|---|---|---|---|---|---|---|"]
    rows += [f"| `{d.name}` | {d.arch} | {d.est_time:g} s | {d.measured:.0f} s | {d.ratio:.2f}x | {d.runs} | {d.suggested:g} |"
             for d in found]
    return "\n".join(["### Duration drift", "", *rows]) + "\n"


def warning_lines(found: Sequence[Drift], in_actions: bool) -> list[str]:
    if in_actions:
        return [f"::warning title=duration drift::{d.line()}" for d in found]
    return [f"warning: duration drift: {d.line()}" for d in found]


# --- invoke durations update / report ------------------------------------------------------------
def update(config: Config, folders: Sequence[Path], store_path: Path, now: dt.datetime, out: TextIO) -> int:
    """Merge every record under `folders` into the store at `store_path` (written atomically). A
    store that cannot be read starts afresh and a record that cannot be read is skipped, each
    with a warning: the history is a cache, never a reason for a run to fail."""
    policy = config.durations.history
    store = EMPTY_STORE
    if store_path.exists():
        try:
            store = read_store(store_path, policy)
        except DurationsError as exc:
            print(f"warning: {exc}: starting a new store", file=out)
    paths, missing = find_records(folders)
    records, warnings = read_records(paths, policy)
    for line in [*missing, *warnings]:
        print(f"warning: {line}", file=out)
    merged = merge(store, records, now, policy)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = store_path.with_name(store_path.name + ".tmp")
    temporary.write_text(store_json(merged))
    temporary.replace(store_path)
    runs = sum(len(e.runs) for e in merged.entries.values())
    print(f"store {store_path}: {len(records)} record(s) merged; {len(merged.entries)} key(s), {runs} run(s) "
          f"across {', '.join(merged.arches()) or 'no arch'}", file=out)
    return 0


def report_lines(config: Config, store: Store, arch: str | None = None, suite: str | None = None) -> list[str]:
    """Per suite and arch, the files whose measured estimate is off est_time past the factor, slowest first."""
    now = reference_time(store)
    found = [d for d in drift(store, now, config.durations.history, config.durations.drift, arch)
             if suite is None or d.suite == suite]
    factor = config.durations.drift.factor
    head = (f"drift past {factor:g}x (either way), p{config.durations.history.quantile * 100:g} of the newest "
            f"{config.durations.history.keep_runs} passing run(s) within {config.durations.history.window_days:g} "
            f"day(s) of {now:%Y-%m-%d %H:%M} UTC, at least {config.durations.drift.min_runs} run(s)")
    if not found:
        return [head, "no file drifts"]
    lines = [head]
    groups: dict[tuple[str, str], list[Drift]] = defaultdict(list)
    for d in found:
        groups[(d.suite, d.arch)].append(d)
    for (group_suite, group_arch), items in sorted(groups.items()):
        lines.append(f"{group_suite or '(no suite)'} on {group_arch}: {len(items)} file(s)")
        lines += [f"  {d.name}: measured {d.measured:.0f} s ({d.runs} run(s)), est_time {d.est_time:g} s, "
                  f"{d.ratio:.2f}x; suggested est_time={d.suggested:g}" for d in items]
    return lines


def report_markdown(config: Config, store: Store, arch: str | None = None, suite: str | None = None) -> list[str]:
    """The report for a job summary: the table, and measured against estimated time per file as a chart."""
    now = reference_time(store)
    policy = config.durations
    found = [d for d in drift(store, now, policy.history, policy.drift, arch) if suite is None or d.suite == suite]
    measured = _per_file(store, now, config, arch, suite)
    lines = ["## Durations", "", "```text", *report_lines(config, store, arch, suite), "```"]
    if measured:
        many = len({a for _, a, _, _ in measured}) > 1

        def name(file: str, on: str) -> str:
            return f"{file} on {on}" if many else file

        rows = [(name(f, a), est, m) for f, a, est, m in sorted(measured, key=lambda r: -r[3])[:policy.drift.chart_rows]]
        lines += ["", f"Measured against estimated time, the {len(rows)} slowest file(s) (drifting ones in red):", "",
                  measured_chart("measured against est_time (s)", rows, {name(d.name, d.arch) for d in found})]
    return lines


def _per_file(store: Store, now: dt.datetime, config: Config, arch: str | None,
              suite: str | None) -> list[tuple[str, str, float, float]]:
    """(file, arch, est_time, measured) for every file in the store (classes summed per file)."""
    sums: dict[tuple[str, str], list[float]] = {}
    for name_arch in store.arches():
        if arch is not None and name_arch != arch:
            continue
        for name, seconds in estimates(store, name_arch, now, config.durations.history).items():
            entry = store.entries[(name_arch, name)]
            if suite is not None and entry.suite != suite:
                continue
            key = (name.split("::", 1)[0], name_arch)
            sums.setdefault(key, [entry.est_time, 0.0])[1] += seconds
    return [(file, a, est, measured) for (file, a), (est, measured) in sorted(sums.items())]
