"""The boundary between the doors (tasks.py, noxfile.py) and the library: argument parsing for
nox posargs and `invoke exec --`, and the one place that masks secrets, turns errors and signals
into one stderr line, and sets the exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ci import secrets
from ci.errors import ExitCode, InfraFailure, Terminated, ToolFailure, UserError, sigterm_raises

INTERRUPTED_EXIT = ExitCode.CANCELLED  # 128 + SIGINT


def run(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call one library function. Secrets are masked before anything is printed; UserError -> exit
    2, ToolFailure -> exit 1 (InfraFailure 3), SIGINT -> 130, SIGTERM -> 143, each with one line
    (secrets scrubbed); a closed stdout is bad input like any other."""
    for noisy in ("urllib3", "docker"):  # nox turns the root logger to DEBUG; their chatter is not ours
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        secrets.mask_all()
        with sigterm_raises():
            result = func(*args, **kwargs)
    except UserError as exc:
        _die(f"error: {exc}", exc.exit_code, whole=exc.multiline)
    except InfraFailure as exc:
        _die(f"infrastructure failure: {exc}", exc.exit_code, whole=True)
    except ToolFailure as exc:
        _die(f"failed: {exc}", exc.exit_code, whole=True)  # may carry a table
    except BrokenPipeError:
        _stdout_gone()
    except KeyboardInterrupt:
        _die("interrupted (SIGINT): stopped before the end; the exit code says failed", INTERRUPTED_EXIT)
    except Terminated:
        _die("interrupted (SIGTERM): stopped before the end; the exit code says failed", Terminated.exit_code)
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        raise SystemExit(result)
    return result




def _die(text: str, code: int, whole: bool = False) -> NoReturn:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _silence_stdout()
    text = secrets.scrub_env(text)
    print(text if whole or not text else text.splitlines()[0], file=sys.stderr, flush=True)
    raise SystemExit(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's own flush at exit has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _stdout_gone() -> NoReturn:
    _silence_stdout()
    _die("error: stdout was closed before the output ended (its reader went away, e.g. `| head -1`); "
         "allowed: a stdout that stays open to the end, e.g. redirect to a file and read that", UserError.exit_code)


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


def argv_after_dashes(argv: Sequence[str]) -> list[str]:
    """The words after the first `--`, exactly as the user's shell passed them (quoting, spaces and
    empty strings kept). invoke's own remainder joins them with spaces, which loses all of that."""
    argv = list(argv)
    return argv[argv.index("--") + 1:] if "--" in argv else []
