"""Stage reports a CI can trust: JUnit XML, a durations file for the next partitioning, and a
Markdown summary (to $GITHUB_STEP_SUMMARY when set). The exit code comes from the results."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from ci.runner import BROKEN, PASSING, UNRUN, FileResult, FileStatus
from ci.suites import RegisteredFile
from ci.thresholds import Checked, headroom_markdown

ICON = {FileStatus.PASSED: "✅", FileStatus.FLAKY: "⚠️", FileStatus.FAILED: "❌", FileStatus.TIMEOUT: "⏱️", FileStatus.NOT_RUN: "⏭️",
        FileStatus.DISABLED: "🚫"}


def verdict(results: Sequence[FileResult]) -> tuple[int, str]:
    """(exit code, one-line verdict). Zero files run is a failure, never a pass."""
    ran = [r for r in results if r.status not in UNRUN]
    if not ran:
        return 1, "FAILED: no test file ran"
    bad = [r for r in results if r.status not in PASSING and r.status is not FileStatus.DISABLED]
    flaky = [r for r in results if r.status is FileStatus.FLAKY]
    if bad:
        return 1, f"FAILED: {counts(results)}"
    return 0, f"PASSED: {counts(results)}" + (" (flaky files passed on retry: look at them)" if flaky else "")


def counts(results: Sequence[FileResult]) -> str:
    return (f"{sum(r.status is FileStatus.PASSED for r in results)} passed, {sum(r.status is FileStatus.FLAKY for r in results)} flaky, "
            f"{sum(r.status in BROKEN for r in results)} failed, {sum(r.status is FileStatus.NOT_RUN for r in results)} not run")


def junit_xml(stage: str, results: Sequence[FileResult], disabled: Sequence[RegisteredFile],
              properties: Mapping[str, str] | None = None) -> str:
    suite = ET.Element("testsuite", name=stage)
    if properties:  # the stage's failure class and its reason (ci.outcome)
        listed = ET.SubElement(suite, "properties")
        for name, value in properties.items():
            ET.SubElement(listed, "property", name=name, value=value)
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=stage, name=r.path, time=f"{r.seconds:.3f}")
        counts["tests"] += 1
        if r.status in BROKEN:
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=r.reason or r.status.value, type=r.status.value)
        elif r.status is FileStatus.NOT_RUN:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=r.reason or "not run")
        elif r.status is FileStatus.FLAKY:
            ET.SubElement(case, "system-out").text = f"flaky: {r.reason}"
    for f in disabled:
        case = ET.SubElement(suite, "testcase", classname=stage, name=f.path, time="0")
        ET.SubElement(case, "skipped", message=f"disabled: {f.disabled}")
        counts["tests"] += 1
        counts["skipped"] += 1
    for key, count in counts.items():
        suite.set(key, str(count))
    suite.set("time", f"{sum(r.seconds for r in results):.3f}")
    return ET.tostring(suite, encoding="unicode")


def durations(results: Sequence[FileResult], previous: dict[str, float]) -> dict[str, float]:
    """Recorded seconds of files that ran to an end (not killed), merged over earlier records."""
    merged = dict(previous)
    for r in results:
        finished = [a for a in r.attempts if a.verdict is not FileStatus.TIMEOUT]
        if finished:
            merged[r.path] = round(finished[-1].seconds, 3)
    return dict(sorted(merged.items()))


def summary_markdown(title: str, results: Sequence[FileResult], disabled: Sequence[RegisteredFile],
                     checks: Sequence[Checked], notes: Sequence[str] = (), sections: Sequence[str] = (),
                     line: str | None = None) -> str:
    """The stage's Markdown: the verdict (or the given one, e.g. an infrastructure failure), extra
    sections (the install), the files, disabled files, performance headroom, notes."""
    line = line or verdict(results)[1]
    rows = ["| | file | status | time | estimate | tries | note |", "|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = f" ({r.seconds / r.est_time:.0%})" if r.est_time and r.attempts else ""
        rows.append(f"| {ICON.get(r.status, '')} | `{r.path}` | {r.status} | {r.seconds:.1f} s{ratio} | {r.est_time:g} s | "
                    f"{len(r.attempts)} | {r.reason.replace('|', '/')} |")
    parts = [f"## {title}", "", f"**{line}**", "", *[part for section in sections for part in (section.rstrip("\n"), "")], *rows]
    if disabled:
        parts += ["", "Disabled:", *[f"- `{f.path}`: {f.disabled}" for f in disabled]]
    if checks:
        parts += ["", "### Performance headroom", "", headroom_markdown(list(checks))]
    if notes:
        parts += ["", *[f"- {n}" for n in notes]]
    return "\n".join(parts) + "\n"


def write_reports(report_dir: Path, stage: str, results: Sequence[FileResult], disabled: Sequence[RegisteredFile],
                  previous_durations: dict[str, float], properties: Mapping[str, str] | None = None) -> dict[str, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {"junit": report_dir / "junit.xml"}  # durations.json: the run record (ci.history), written by the stage
    paths["junit"].write_text(junit_xml(stage, results, disabled, properties))
    return paths
