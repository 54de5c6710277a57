"""Progress output: a rich bar at a terminal, plain periodic lines in a log."""

from __future__ import annotations

import io

from ci.progress import BarProgress, PlainProgress, human_bytes, progress_for


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_a_log_gets_lines():
    bar = progress_for("pull x", 10, Terminal())
    assert isinstance(bar, BarProgress)
    bar.update(5 * 2**20, 10 * 2**20)
    bar.close()
    assert isinstance(progress_for("pull x", 10, io.StringIO()), PlainProgress)


def test_plain_lines_come_at_the_interval_only():
    log = io.StringIO()
    now = [100.0]
    plain = PlainProgress("pull x", 0.2, log, clock=lambda: now[0])
    plain.update(1, 10)  # too soon: nothing
    now[0] += 0.19
    plain.update(2, 10)  # still too soon
    now[0] += 0.01
    plain.update(3 * 2**20, 9 * 2**20)
    plain.update(4 * 2**20, 9 * 2**20)  # too soon again
    assert log.getvalue() == "pull x: 3.0 MiB of 9.0 MiB\n"


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 1536, 3 * 2**30)] == ["512 B", "1.5 KiB", "3.0 GiB"]
