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
