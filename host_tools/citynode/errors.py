"""Exit codes (CONTRACT.md) and the one-line errors that carry them up to the CLI."""
import click

OK, CHECK_FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


class CitynodeError(click.ClickException):
    """One line, no traceback, with the contract's exit code."""
    exit_code = CHECK_FAILED

    def __init__(self, message, exit_code=None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class CheckFailed(CitynodeError):
    exit_code = CHECK_FAILED


class Unreachable(CitynodeError):
    """The device or the broker could not be reached."""
    exit_code = UNREACHABLE
