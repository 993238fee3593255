"""``promptdrop submit FILE [--wait]``: upload a file under the input prefix — the S3 notification
starts its job — and, with ``--wait``, follow the job to its end and print its summary.

The upload's knobs go up as the object's metadata (its job header, read by the function when the
job starts): ``--template`` (a ``.csv``'s prompt template), ``--endpoint``, ``--model``, ``--mode`` (with
``--deadline`` and ``--fallback`` for the Batch API), ``--cache``, ``--budget-usd``, ``--budget-tokens``,
``--max-requests``. The exit status says how the job ended:
0 when every request succeeded, 1 when some failed or the job failed or was cancelled, 3 when
``--timeout`` ran out first (the job goes on).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..engine.request import Endpoint
from ..formats import CSV_TEMPLATE_METADATA, ENDPOINT_METADATA, MODEL_METADATA, SUFFIXES
from ..jobs.answer_cache import CACHE_METADATA, CachePolicy
from ..jobs.batch_deadline import DEADLINE_METADATA
from ..jobs.batch_mode import FALLBACK_METADATA, Fallback
from ..jobs.cost_guard import BUDGET_METADATA
from ..jobs.modes import MODE_METADATA, Mode
from .errors import CliError, ExitCode
from .figures import money, now_iso, rate
from .jobstore import Job, JobStore, S3Ref
from .resources import Clients, add_resource_flags, resolve
from .status import describe, detail_rows, job_json, progress_cells
from .view import View

__all__ = ["add_parser", "follow", "run"]


def follow(
    store: JobStore,
    job_id: str,
    view: View,
    *,
    interval_s: float = 2.0,
    timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Job | None:
    """Poll the job item until the job is final (returned) or ``timeout_s`` passes (None): done out of
    the line count, the rate and ETA as ``status`` shows them (from the job item's progress window)."""
    deadline = None if timeout_s is None else clock() + timeout_s
    with view.progress("WAITING") as bar:
        while True:
            job = store.get(job_id)
            now = clock()
            if job is None:
                bar.update(status="WAITING", done=0, total=None, rate="-", eta="-", detail="for the job to start")
            else:
                prompt, completion = job.tokens
                detail = f"ok {job.ok:,}  failed {job.not_ok:,}  {prompt + completion:,} tokens  {money(job.cost_usd)}"
                bar.update(
                    status=describe(job),
                    done=job.done,
                    total=job.line_count or (job.total if job.settled else None),
                    rate=rate(job.recent_rate),
                    # as status says it: the time left, or why there is none (writing the outputs, stopping...)
                    eta="-" if job.final else progress_cells(job, datetime.now(UTC))[1],
                    detail=detail,
                )
                if job.final:
                    return job
            if deadline is not None and now >= deadline:
                return None
            sleep(interval_s if deadline is None else max(0.0, min(interval_s, deadline - now)))


def header(args: argparse.Namespace) -> dict[str, str]:
    """The upload's job header (its S3 metadata) from the command's flags: only what was given."""
    for flag, value in (("--template", args.template), ("--model", args.model)):
        if value is not None and not value.isascii():
            raise CliError(f"{flag} must be ASCII: S3 metadata (the job header it travels in) is ASCII only")
    given = {
        CSV_TEMPLATE_METADATA: args.template,
        ENDPOINT_METADATA: args.endpoint,
        MODEL_METADATA: args.model,
        MODE_METADATA: args.mode,
        CACHE_METADATA: args.cache,
        FALLBACK_METADATA: args.fallback,
        DEADLINE_METADATA: args.deadline,
        BUDGET_METADATA["usd"]: None if args.budget_usd is None else f"{args.budget_usd:g}",
        BUDGET_METADATA["tokens"]: None if args.budget_tokens is None else str(args.budget_tokens),
        BUDGET_METADATA["requests"]: None if args.max_requests is None else str(args.max_requests),
    }
    return {name: value for name, value in given.items() if value is not None}


def _endpoint(value: str) -> str:
    endpoint = Endpoint.of(value)
    if endpoint is None:
        raise argparse.ArgumentTypeError(f"not an endpoint promptdrop sends: use one of {', '.join(Endpoint)}")
    return endpoint.value


def _model(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("a model is a name, e.g. gpt-4o-mini")
    return value.strip()


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value <= 10**15:  # the function's own bound (settings.MAX_COUNT)
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most 10^15")
        return value

    return parse


def _upload(aws: Clients, path: Path, bucket: str, key: str, metadata: dict[str, str]) -> None:
    extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
    aws.s3.upload_file(str(path), bucket, key, ExtraArgs=extra or None)


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "submit",
        parents=[parent],
        help="upload a file under the input prefix (its job starts); --wait follows it to the end",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmd.add_argument("file", type=Path, help=f"a prompt file ({', '.join(SUFFIXES)})")
    cmd.add_argument("--key", help="object key (default: the input prefix + the file's name)")
    cmd.add_argument("--template", help="a .csv's prompt template, e.g. 'Name one museum in {city}.'")
    cmd.add_argument("--endpoint", type=_endpoint, help="the endpoint of short-form lines that name none")
    cmd.add_argument(
        "--model",
        type=_model,
        help="the model of lines that name none, in place of the function's PROMPTDROP_MODEL "
        "(embeddings, completions and moderations lines keep their endpoint's usual model)",
    )
    cmd.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        help="realtime; flex (half price where offered); batch (the Batch API: half price, within 24 h); "
        "auto (batch while --deadline allows, then flex, then standard)",
    )
    cmd.add_argument("--deadline", help="with --mode auto: when the answers are due (6h, 90m, or an ISO time)")
    cmd.add_argument(
        "--fallback",
        choices=[f.value for f in Fallback],
        help="lines a provider batch did not finish: sent in real time, or failed",
    )
    cmd.add_argument("--cache", choices=[c.value for c in CachePolicy], help="the answer cache's policy for this file")
    cmd.add_argument("--budget-usd", type=_positive(float), metavar="N", help="the file's budget in US dollars")
    cmd.add_argument("--budget-tokens", type=_positive(int), metavar="N", help="the file's budget in tokens")
    cmd.add_argument("--max-requests", type=_positive(int), metavar="N", help="requests the file may send")
    cmd.add_argument("--wait", action="store_true", help="follow the job to its end and print its summary")
    cmd.add_argument("--timeout", type=float, metavar="S", help="with --wait: stop waiting after S seconds (exit 3)")
    cmd.add_argument("--interval", type=float, default=2.0, metavar="S", help="with --wait: poll every S seconds")
    add_resource_flags(cmd, "table", "bucket")


def run(args: argparse.Namespace, view: View, aws: Clients) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.suffix.lower() not in SUFFIXES:
        raise CliError(f"{path}: the function reads {', '.join(SUFFIXES)} files (by suffix); rename it")
    resources = resolve(args, aws)
    bucket, prefix = resources.need("bucket"), resources.input_prefix
    key = args.key or prefix + path.name
    if not key.startswith(prefix):
        raise CliError(f"{key} is outside the input prefix {prefix!r}: the function would never see it")
    if args.template is not None and path.suffix.lower() != ".csv":
        raise CliError("--template is for .csv files (a prompt template over their columns)")
    if args.wait:
        resources.need("table")  # before uploading: the wait would fail after it
    store = JobStore(aws, resources)
    uploaded_at = now_iso()
    _upload(aws, path, bucket, key, header(args))
    job_id = store.job_id_of(S3Ref(bucket, key))
    uploaded = {"job_id": job_id, "bucket": bucket, "key": key}
    if not args.wait:
        if view.json_mode:
            view.json(uploaded)
        else:
            view.line(f"uploaded {path} to s3://{bucket}/{key}: job {job_id}")
            view.line(f"follow it: promptdrop status {job_id}")
        return ExitCode.OK
    earlier = store.get(job_id)
    if earlier is not None and earlier.final and (earlier.started_at or "") < uploaded_at:
        view.note(
            f"this is the same content as an earlier upload of {key} (same ETag, same job, {earlier.status} at "
            f"{earlier.finished_at}): nothing runs again; use --key to run it as a new job"
        )
    else:
        view.note(f"uploaded to s3://{bucket}/{key}: job {job_id} (Ctrl-C stops waiting, not the job)")
    try:
        job = follow(store, job_id, view, interval_s=args.interval, timeout_s=args.timeout)
    except KeyboardInterrupt:
        view.note(f"stopped waiting; the job goes on: promptdrop status {job_id} (or promptdrop cancel {job_id})")
        return ExitCode.INTERRUPTED
    if job is None:
        view.note(f"still running after {args.timeout:g}s; the job goes on: promptdrop status {job_id}")
        if view.json_mode:
            view.json({**uploaded, "status": "RUNNING", "timed_out": True})
        return ExitCode.STILL_RUNNING
    if view.json_mode:
        view.json({"job": job_json(job, store), "summary": store.summary(job)})
    else:
        view.fields(detail_rows(job, store.failures_by_code(job), store.header(job)), title="job finished")
    succeeded = job.status == "SUCCEEDED" and job.not_ok == 0
    return ExitCode.OK if succeeded else ExitCode.NOT_ALL_SUCCEEDED
