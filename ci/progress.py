"""Pull progress for people and logs: a rich bar in a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"


class PlainProgress:
    """One line every `interval_s` seconds: what a CI log can hold."""

    def __init__(self, label: str, interval_s: float, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.interval_s, self.stream, self.clock = label, interval_s, stream or sys.stdout, clock
        self._last = clock()

    def update(self, done: int, total: int | None) -> None:
        now = self.clock()
        if now - self._last >= self.interval_s:
            self._last = now
            of = f" of {human_bytes(total)}" if total else ""
            print(f"{self.label}: {human_bytes(done)}{of}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class BarProgress:
    """A rich progress bar, for a person at a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        # rich is imported only when a bar is shown: CI logs and a door that finds the image never need it.
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._progress = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                  console=Console(file=stream or sys.stdout), transient=True)
        self._task = self._progress.add_task(label, total=None)
        self._progress.start()

    def update(self, done: int, total: int | None) -> None:
        self._progress.update(self._task, completed=done, total=total or None)

    def close(self) -> None:
        self._progress.stop()


def progress_for(label: str, interval_s: float, stream: TextIO | None = None) -> PlainProgress | BarProgress:
    target = stream or sys.stdout
    return BarProgress(label, target) if target.isatty() else PlainProgress(label, interval_s, target)
