"""The boundary between the doors (tasks.py, noxfile.py) and the library: argument parsing for
nox posargs, and the one place that turns errors into one stderr line and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ci.errors import InfraFailure, ToolFailure, UserError


def run(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call one library function; UserError -> exit 2, ToolFailure -> exit 1 (InfraFailure 3), one line."""
    for noisy in ("urllib3", "docker"):  # nox turns the root logger to DEBUG; their chatter is not ours
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = func(*args, **kwargs)
    except UserError as exc:
        _die(f"error: {exc}", exc.exit_code, whole=exc.multiline)
    except InfraFailure as exc:
        _die(f"infrastructure failure: {exc}", exc.exit_code, whole=True)
    except ToolFailure as exc:
        _die(f"failed: {exc}", exc.exit_code, whole=True)  # may carry a table
    except KeyboardInterrupt:
        _die("interrupted", 130)
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        raise SystemExit(result)
    return result


def _die(text: str, code: int, whole: bool = False) -> NoReturn:
    sys.stdout.flush()
    print(text if whole or not text else text.splitlines()[0], file=sys.stderr, flush=True)
    raise SystemExit(code)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit itself
        raise UserError(f"{message} (see {self.prog} --help)")


def stage_arguments(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Run one CI stage (what `nox -s stage_X -- ...` takes).")
    parser.add_argument("--arch", help="runner arch (default: detected)")
    parser.add_argument("--suite", help="run one suite of the stage (default: all)")
    parser.add_argument("--partition", help="i/N: run partition i of N (1-based)")
    parser.add_argument("--image", help="image name; skips nightly resolution")
    parser.add_argument("--rocm", help="ROCm version of the nightly image")
    parser.add_argument("--test-root", help="where the registered test files live")
    parser.add_argument("--durations", help="durations store (or a run record) to plan on")
    parser.add_argument("--report-dir", help="where JUnit, durations and summary go")
    parser.add_argument("--retries", type=int, help="retries for retryable failures")
    parser.add_argument("--continue-on-error", action="store_true", help="keep going after a failed file")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; no Docker, no GPU")
    parser.add_argument("--replay", metavar="PATH_OR_URL", help="run a CI job again from its report (folder, replay.json or URL)")
    parser.add_argument("--only", action="append", metavar="FILE", help="--replay: only this unit of the report (repeatable)")
    parser.add_argument("--failed", action="store_true", help="--replay: only the units that failed, timed out or were flaky")
    parser.add_argument("--force", action="store_true", help="--replay: run where this box cannot reproduce the job")
    return parser


def parse_stage_args(prog: str, argv: Sequence[str]) -> argparse.Namespace:
    return stage_arguments(prog).parse_args(list(argv))
