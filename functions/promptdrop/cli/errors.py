"""The CLI's exit codes and its one exception type (mapped to a message and a code in ``main``)."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CliError", "ExitCode"]


class ExitCode(IntEnum):
    """What ``promptdrop`` exits with (README, "CLI" → exit codes)."""

    OK = 0  # done as asked; submit --wait: every request succeeded
    # a job PARTIAL, FAILED or CANCELLED; lines that would fail; nothing to cancel; no outputs yet
    NOT_ALL_SUCCEEDED = 1
    USAGE = 2  # bad arguments, a resource not found or not configured, an AWS error
    STILL_RUNNING = 3  # submit --wait --timeout ran out with the job still running (it goes on)
    INTERRUPTED = 130  # Ctrl-C (the job, if any, goes on)


class CliError(Exception):
    """A failure the user can act on: ``message`` says what to do; ``code`` is the exit status."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
