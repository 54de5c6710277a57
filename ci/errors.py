"""Errors that the command-line boundary turns into one stderr line and exit code 2."""


class UserError(Exception):
    """Bad input from a person or a config file: said in one line, never with a traceback."""

    exit_code = 2
    multiline = False  # a report of several problems (a test tree, budgets) is printed whole


class ConfigError(UserError):
    """A config file that does not parse or does not validate."""


class ToolFailure(Exception):
    """An operation that failed for a reason outside the user's input (exit code 1)."""

    exit_code = 1


class ExitCodeUnknown(ToolFailure):
    """A command whose exit code the engine did not record (or that still ran after the wait):
    a failure, never a pass."""


class Terminated(BaseException):
    """SIGTERM (what a cancelled CI job gets after SIGINT), raised like KeyboardInterrupt so that
    `finally` blocks run, the container stops and reports are written."""

    signal_name = "SIGTERM"
    exit_code = 143  # 128 + SIGTERM, as a shell reports it
