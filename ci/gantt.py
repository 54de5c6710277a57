"""Charts GitHub draws in job summaries and Markdown: Mermaid `gantt` blocks, built as text by pure
functions. Time runs in seconds from 0 (`dateFormat X`, `axisFormat %s`: no clock, no time zone).

- partitions: one section per partition, one bar per file or shard laid end to end (`after` the
  one before: Mermaid takes a bare number as a start only when it is 0), bars past the budget
  marked `crit`, and the budget as a bar of its own from 0 to the budget;
- measured against estimated: one section per file, an `est_time` bar and a `measured` bar."""

from __future__ import annotations

import re
from collections.abc import Sequence, Set

_UNSAFE = re.compile(r"[:;#\n\r`%]")


def label(text: str) -> str:
    """A task or section name Mermaid reads as text: `file::A+B` -> `file [A+B]`, no `:`/`;`/`#`."""
    if "::" in text:
        file, _, rest = text.partition("::")
        text = f"{file} [{rest}]"
    return _UNSAFE.sub(" ", text).strip() or "?"


def _block(title: str, lines: Sequence[str]) -> str:
    return "\n".join(["```mermaid", "gantt", f"    title {label(title)}", "    dateFormat X", "    axisFormat %s",
                      *lines, "```"])


def partitions_chart(title: str, partitions: Sequence[Sequence[tuple[str, float]]], budget_s: float | None = None,
                     highlight: int | None = None) -> str:
    """A Mermaid gantt of partitions (lists of (unit name, seconds)), the budget line marked;
    `highlight` (1-based) marks this run's partition as active."""
    lines = []
    for number, units in enumerate(partitions, 1):
        total = sum(s for _, s in units)
        here = " (this run)" if highlight == number else ""
        lines.append(f"    section P{number} {total:.0f} s{here}")
        start, previous = 0.0, None
        for index, (name, seconds) in enumerate(units):
            length = max(round(seconds), 1)
            end = start + length
            tags = ["crit"] if budget_s is not None and end > budget_s else (["active"] if highlight == number else [])
            task = f"p{number}u{index}"
            # each bar after the one before: Mermaid reads a bare number as a start only when it is 0
            where = f"after {previous}" if previous else "0"
            lines.append(f"    {label(name)} ({seconds:.0f} s) :{', '.join([*tags, task])}, {where}, {length}s")
            start, previous = end, task
    if budget_s is not None:
        lines += ["    section budget", f"    budget {budget_s:.0f} s :done, budget, 0, {max(round(budget_s), 1)}s"]
    return _block(title, lines)


def measured_chart(title: str, rows: Sequence[tuple[str, float, float]], drifting: Set[str] = frozenset()) -> str:
    """A Mermaid gantt of (name, est_time, measured): two bars per unit; drifting units' measured bar `crit`."""
    lines = []
    for index, (name, est, measured) in enumerate(rows):
        # the name on the bars: section titles have a narrow margin and would be clipped
        lines += [f"    section {index + 1}",
                  f"    {label(name)} est_time {est:.0f} s :e{index}, 0, {max(round(est), 1)}s",
                  f"    {label(name)} measured {measured:.0f} s :{'crit, ' if name in drifting else ''}m{index}, 0, "
                  f"{max(round(measured), 1)}s"]
    return _block(title, lines)
