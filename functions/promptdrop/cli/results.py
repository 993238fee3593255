"""``promptdrop results KEY | JOB_ID [--errors] [--out DIR]``: a job's answers, or its failures, or
every output file downloaded.

Printed as stored (the Batch API output lines of ``.out.jsonl`` / ``.errors.jsonl``, in input
order) when the output is not a terminal or with ``--json``; on a terminal (or with ``--as-table``) as
a table: each answer's input line, custom_id and answer as its endpoint gives it (the text; a
moderation's flagged categories or "not flagged"; an embedding's count and dimensions), or each
failure's line, custom_id, code and reason.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath
from typing import Any

from ..engine.endpoints import spec_of_answer
from ..outputs import line_of
from .errors import CliError, ExitCode
from .jobstore import REF_HELP, Job, JobStore
from .resources import Clients, add_resource_flags, resolve
from .view import Column, View

__all__ = ["add_parser", "run"]

_CELL = 300  # characters of an answer shown in a table cell
_ROWS = 500  # rows shown in a terminal's table (all of them: pipe it, or --json)


def _cut(text: str) -> str:
    """A cell: one line (a plain table has no other way to show it), at most ``_CELL`` characters."""
    text = " ".join(text.splitlines())
    return text if len(text) <= _CELL else text[:_CELL] + "…"


def _answer(line: dict[str, Any]) -> str:
    """The answer as its endpoint gives it to a person (engine.endpoints: EndpointSpec.shown)."""
    response = line.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    spec = spec_of_answer(body) if isinstance(body, dict) else None
    return "-" if spec is None or not isinstance(body, dict) else _cut(spec.shown(body))


def _line(output: dict[str, Any]) -> str:
    found = line_of(output.get("id"))
    return "-" if found is None else str(found)


def _download(view: View, store: JobStore, job: Job, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    missing: list[str] = []
    for name in sorted(job.outputs):
        body = store.output(job, name)
        if body is None:
            missing.append(name)
            continue
        target = out / PurePosixPath(job.outputs[name]).name
        with body, target.open("wb") as file:
            for chunk in body.iter_chunks():
                file.write(chunk)
        written[name] = str(target)
    if view.json_mode:
        view.json({"job_id": job.job_id, "status": job.status, "files": written, "missing": missing})
    else:
        for name, path in written.items():
            view.line(f"{name:<8} {path}")
        if missing:
            view.note(f"not written yet: {', '.join(missing)} (job {job.status})")
    return ExitCode.OK if written else ExitCode.NOT_ALL_SUCCEEDED


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "results",
        parents=[parent],
        help="print a job's answers (or --errors), or download its outputs (--out DIR)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmd.add_argument("ref", metavar="KEY | JOB_ID", help=REF_HELP)
    cmd.add_argument("--errors", action="store_true", help="the failed requests (.errors.jsonl) instead")
    cmd.add_argument("--out", type=Path, metavar="DIR", help="download every output file into DIR")
    cmd.add_argument("--as-table", action="store_true", help="a table even when the output is not a terminal")
    add_resource_flags(cmd, "table", "bucket")


def run(args: argparse.Namespace, view: View, aws: Clients) -> int:
    store = JobStore(aws, resolve(args, aws))
    job = store.locate(args.ref)
    if args.out is not None:
        return _download(view, store, job, args.out)
    name = "errors" if args.errors else "results"
    body = store.output(job, name)
    if body is None:
        raise CliError(
            f"job {job.job_id} is {job.status}: its outputs are written when it ends (promptdrop status {job.job_id})",
            ExitCode.NOT_ALL_SUCCEEDED,
        )
    if not job.final:
        view.note(f"job {job.job_id} is {job.status}: these outputs are from an earlier run and will be rewritten")
    with body:
        if not (view.rich or args.as_table) or view.json_mode:
            for line in body.iter_lines():
                view.raw(line.decode() + "\n")
            return ExitCode.OK
        lines: list[dict[str, Any]] = []
        more = 0
        for line in body.iter_lines():
            if len(lines) < _ROWS:
                lines.append(json.loads(line))
            else:
                more += 1
    if args.errors:
        columns = [Column("line", True), Column("custom_id"), Column("code"), Column("reason")]
        errors = [(x, x.get("error") or {}) for x in lines]
        rows = [[_line(x), str(x["custom_id"]), str(e.get("code")), _cut(str(e.get("message")))] for x, e in errors]
    else:
        columns = [Column("line", True), Column("custom_id"), Column("answer")]
        rows = [[_line(x), str(x["custom_id"]), _answer(x)] for x in lines]
    view.table(columns, rows, title=f"{job.uri}: {len(rows) + more} {'failed request' if args.errors else 'answer'}(s)")
    if more:
        view.line(f"… {more} more: pipe it (promptdrop results {args.ref} | …) or use --json for every line")
    return ExitCode.OK
