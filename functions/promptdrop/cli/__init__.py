"""``promptdrop``: the operator's commands for the life of a job.

``estimate`` (offline) → ``submit [--wait]`` → ``status`` → ``results``; ``cancel`` and ``redrive``
to stop and resume, ``budget`` to raise a job's budget; ``local`` runs the whole stack on this
machine. Every command takes ``--json``; resources come from flags, ``--stack NAME`` or the
function's environment variables (:mod:`.resources`); the exit codes are :class:`.errors.ExitCode` (README, "CLI").

One module per command; this one builds the parser and maps every error to a message and a code.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from . import budget, cancel, dead_letters, estimate, local, results, status, submit
from .dead_letters import redrive
from .errors import CliError, ExitCode
from .resources import Clients
from .view import View

__all__ = ["main", "redrive"]

EPILOG = (
    "exit codes: 0 done (submit --wait: every request succeeded); 1 not all succeeded (a job PARTIAL, "
    "FAILED, CANCELLED or BUDGET_EXCEEDED; lines that would fail; nothing to cancel; no outputs yet); 2 usage or setup "
    "error; 3 still running after --timeout; 130 interrupted"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptdrop",
        description="Drop a file of prompts, watch it run, get the answers: the life of a job.",
        epilog=EPILOG,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output (JSON) for scripts")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (estimate, submit, status, cancel, budget, results, dead_letters, local):
        module.add_parser(commands, common)
    for command in commands.choices.values():  # each description is its module's docstring: reST
        command.description = plain_text(command.description)
        command.formatter_class = _Paragraphs
    return parser


class _Paragraphs(argparse.HelpFormatter):
    """A description's paragraphs kept apart (argparse would run them together), each wrapped to the
    terminal without breaking a flag at its hyphen (``--max-`` / ``requests``)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = (" ".join(paragraph.split()) for paragraph in text.split("\n\n"))
        return "\n\n".join(
            textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)
            for p in paragraphs
        )


# What AWS answers for a table, bucket or queue that does not exist: a name from an old shell's exports?
_NOT_FOUND = {"ResourceNotFoundException", "NoSuchBucket", "AWS.SimpleQueueService.NonExistentQueue"}


def _stale_hint(exc: BotoCoreError | ClientError) -> str:
    """For a resource not found: the names the CLI took from the environment, and where fresh ones are."""
    if not isinstance(exc, ClientError) or exc.response.get("Error", {}).get("Code") not in _NOT_FOUND:
        return ""
    names = (
        "AWS_ENDPOINT_URL",
        "PROMPTDROP_TABLE",
        "PROMPTDROP_BUCKET",
        "PROMPTDROP_DLQ_URL",
        "PROMPTDROP_WORK_QUEUE_URL",
    )
    used = "  ".join(f"{name}={os.environ[name]}" for name in names if os.environ.get(name))
    return (
        f"\nis an export stale? from the environment: {used or '(none)'}\n"
        "promptdrop local prints its exports when it starts (the same at every start on the same --port); "
        "a deployed stack: --stack NAME"
    )


# Sphinx's cross-references: :func:`pkg.name` reads pkg.name, :func:`~pkg.name` reads name.
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def plain_text(rest: str | None) -> str | None:
    """A docstring's reST as a person reads it in ``--help``: ``code`` and :role:`~a.b` markup dropped."""
    if rest is None:
        return None
    text = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], rest)
    return text.replace("``", "")


def _run(args: argparse.Namespace, view: View) -> int:
    if args.command == "estimate":
        return estimate.run(args, view)
    if args.command == "local":
        return local.run(args, view)
    command = {
        "submit": submit.run,
        "status": status.run,
        "cancel": cancel.run,
        "budget": budget.run,
        "results": results.run,
        "redrive": dead_letters.run,
    }[args.command]
    with Clients() as aws:
        return command(args, view, aws)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (never raises for what a user can fix)."""
    args = _parser().parse_args(argv)
    view = View(json_mode=args.json)
    try:
        return _run(args, view)
    except CliError as exc:
        view.note(f"promptdrop {args.command}: {exc.message}")
        return exc.code
    except (BotoCoreError, ClientError) as exc:
        view.note(f"promptdrop {args.command}: AWS said: {exc}{_stale_hint(exc)}")
        return ExitCode.USAGE
    except KeyboardInterrupt:
        view.note(f"promptdrop {args.command}: interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `promptdrop results KEY | head`
        sys.stderr.close()
        return ExitCode.OK
