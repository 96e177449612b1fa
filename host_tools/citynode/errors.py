"""The library's errors: one line each, carrying the contract's exit code (docs/contract.md) in
`exit_code`. Only the CLI (citynode.cli) turns them into an exit; a script catches them.

    try:
        deploy.deploy(dev)
    except CitynodeError as e:
        print(e, e.exit_code)          # "…: the port went away while …" 3
"""
OK, CHECK_FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


class CitynodeError(Exception):
    """One line, no traceback, with the contract's exit code."""
    exit_code = CHECK_FAILED

    def __init__(self, message, exit_code=None, param=None):
        super().__init__(message)
        self.message = message
        self.param = param      # the keyword argument it is about: the CLI names its option
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self):
        return self.message


class CheckFailed(CitynodeError):
    """A check failed: an invalid config or firmware, a field test FAIL."""
    exit_code = CHECK_FAILED


class BadInput(CitynodeError):
    """What the caller passed cannot be used (a malformed address, a file of the wrong kind)."""
    exit_code = USAGE


class Unreachable(CitynodeError):
    """The device or the broker could not be reached."""
    exit_code = UNREACHABLE
