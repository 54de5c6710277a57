"""The collective smoke test, host side: fill config's argv (health.smoke) with the job's GPU
count, run it in the CI container through the tests' own exec path with its own timeout, read
each rank's `SGL_CI_SMOKE` line, and say in one line what happened. A failure is the machine's
(an infrastructure failure), never the tests'."""

from __future__ import annotations

import codecs
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ci.allreduce_smoke import MARK
from ci.config import SmokeTest


class Executor(Protocol):
    """What runs a command in the container (ci.container.Containers has this)."""

    def run_exec(self, argv, env, workdir, sink=None, timeout_s=None) -> Any: ...


class _Collect:
    def __init__(self, out):
        self.out = out
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def write(self, chunk: bytes) -> int:
        text = self.decoder.decode(chunk)
        self.text += text
        if self.out is not None:
            self.out.write(text)
        return len(chunk)

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    gpus: int
    seconds: float
    reason: str  # one line
    ranks: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    argv: tuple[str, ...] = ()

    def markdown(self) -> str:
        head = "OK" if self.ok else "**INFRASTRUCTURE FAILURE**"
        rows = ["| rank | device | sum | expected | s |", "|---|---|---|---|---|"]
        rows += [f"| {r.get('rank')} | {r.get('name') or r.get('device')} | {r.get('sum')} | {r.get('expected')} | "
                 f"{r.get('seconds')} |" for r in self.ranks]
        return "\n".join([f"### Collective smoke test: {head} in {self.seconds:.1f} s", "",
                          f"`{' '.join(self.argv)}`: {self.reason}", "", *(rows if self.ranks else [])]) + "\n"


def smoke_argv(spec: SmokeTest, gpus: int, toolkit: str, backend: str | None = None) -> tuple[str, ...]:
    """config's argv with its placeholders filled; `toolkit`: where the toolkit is mounted in the container."""
    values = {"gpus": str(gpus), "backend": backend or spec.backend, "timeout_s": f"{spec.timeout_s:g}",
              "elements": str(spec.elements), "toolkit": toolkit}
    out = []
    for arg in spec.argv:
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        out.append(arg)
    return tuple(out)


def ranks_of(text: str) -> list[dict[str, Any]]:
    """Each rank's report, wherever it sits in the output (a launcher may glue two lines together)."""
    ranks = []
    for found in re.finditer(re.escape(MARK) + r"(\{[^{}]*\})", text):
        try:
            ranks.append(json.loads(found.group(1)))
        except ValueError:
            continue
    return sorted(ranks, key=lambda r: r.get("rank", 0))


def judge(gpus: int, exit_code: int, timed_out: bool, text: str, seconds: float, argv: tuple[str, ...],
          timeout_s: float) -> SmokeResult:
    ranks = ranks_of(text)
    good = [r for r in ranks if r.get("ok")]
    if timed_out:
        why = f"no result within {timeout_s:g} s ({len(good)}/{gpus} rank(s) reported): a collective that hangs"
    elif exit_code != 0:
        tail = [line for line in text.splitlines() if line.strip()][-1:] or [""]
        why = f"exited with {exit_code} ({len(good)}/{gpus} rank(s) reported){': ' + tail[0].strip()[:200] if tail[0] else ''}"
    elif len(good) != gpus:
        why = f"{len(good)}/{gpus} rank(s) reported the right sum"
    else:
        return SmokeResult(True, gpus, seconds, f"all-reduce across {gpus} rank(s) ({ranks[0].get('backend')}) gave "
                                                f"the exact sum in {seconds:.1f} s", tuple(ranks), argv)
    return SmokeResult(False, gpus, seconds, "collective smoke test failed: " + why, tuple(ranks), argv)


def run_smoke(executor: Executor, spec: SmokeTest, gpus: int, toolkit: str, env: Mapping[str, str], out=None,
              backend: str | None = None) -> SmokeResult:
    argv = smoke_argv(spec, gpus, toolkit, backend)
    sink = _Collect(out)
    started = time.monotonic()
    outcome = executor.run_exec(list(argv), dict(env), spec.workdir, sink, spec.timeout_s)
    return judge(gpus, outcome.exit_code, outcome.timed_out, sink.text, time.monotonic() - started, argv, spec.timeout_s)
