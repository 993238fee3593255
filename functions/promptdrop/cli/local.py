"""``promptdrop local``: the whole stack on this machine, until Ctrl-C — a local drop-box.

A moto server with the resources ``template.yaml`` declares (bucket and its S3 → SQS notification,
work queue, dead-letter queue, table, secret), the fake OpenAI API (or, with ``--real-openai``, the
real one: ``OPENAI_API_KEY``), and Lambda's SQS event-source mapping played in-process: every
message on the work queue goes through the real handler, as in AWS. Files copied in with the AWS
CLI or ``promptdrop submit`` run; ``promptdrop status`` shows them.

The local tooling lives in ``infra/``, which is not part of the installed package: this command
runs from a source checkout installed with the dev extra (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from .errors import CliError, ExitCode
from .view import View

__all__ = ["LocalStack", "add_parser", "run", "serve"]

LOCAL_KEY = "sk-local"  # the fake API's key, stored in the stack's secret as a real key would be
DEFAULT_PORT = 5050


@dataclass(frozen=True)
class LocalStack:
    """What a user needs to reach the running local stack."""

    endpoint: str
    openai_base_url: str | None
    bucket: str
    table: str
    work_queue_url: str
    dlq_url: str
    input_prefix: str
    output_prefix: str
    events_queue_url: str = ""  # where the completion events land (a rule on the bus)
    env: dict[str, str] = field(default_factory=dict)  # what to export in another shell


def _infra() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``infra.local_aws``, ``infra.fake_openai`` and ``infra.event_source``, from the source checkout."""
    root = Path(__file__).resolve().parents[3]  # functions/promptdrop/cli/local.py -> the checkout
    if (root / "infra" / "local_aws.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the console script does not run from the checkout
    try:
        from infra import event_source, fake_openai, local_aws
    except ImportError as exc:
        raise CliError(
            f"promptdrop local needs a source checkout installed with the dev extra ({exc}): "
            "git clone the repository, then pip install -e '.[dev]' in it"
        ) from None
    return local_aws, fake_openai, event_source


@contextlib.contextmanager
def _openai(fake_openai: ModuleType, real: bool, latency_ms: float) -> Iterator[tuple[str | None, str]]:
    """(base URL, or None for the SDK's default; the key to store in the stack's secret)."""
    if real:
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise CliError("--real-openai needs OPENAI_API_KEY (and OPENAI_BASE_URL for another compatible API)")
        yield os.environ.get("OPENAI_BASE_URL"), key
        return
    config = fake_openai.FakeOpenAIConfig(latency_ms=latency_ms, jitter_ms=latency_ms / 4, require_api_key=LOCAL_KEY)
    with fake_openai.serve_in_thread(config) as server:
        yield server.base_url, LOCAL_KEY


def serve(
    *,
    port: int = DEFAULT_PORT,
    stack_name: str = "promptdrop-local",
    latency_ms: float = 50.0,
    real_openai: bool = False,
    verbose: bool = False,
    on_ready: Callable[[LocalStack], None],
    stop: threading.Event,
    on_error: Callable[[BaseException], None] = lambda exc: None,
) -> None:
    """Run the local stack until ``stop`` is set; ``on_ready`` is called once it takes files.

    Sets the function's environment in ``os.environ`` (the handler reads its configuration there,
    as on Lambda): run it in a process of its own.
    """
    local_aws, fake_openai, event_source = _infra()
    import boto3

    try:
        server, endpoint = local_aws.start_moto(port)
    except OSError as exc:
        raise CliError(f"cannot listen on port {port} ({exc}): try another --port (0 picks a free one)") from None
    try:
        stack = local_aws.deploy(endpoint, stack_name=stack_name)
        with _openai(fake_openai, real_openai, latency_ms) as (base_url, key):
            env = stack.function_env(
                POWERTOOLS_LOG_LEVEL="INFO" if verbose else "WARNING",
                POWERTOOLS_METRICS_DISABLED="false" if verbose else "true",
                **({"OPENAI_BASE_URL": base_url} if base_url else {}),
            )
            os.environ.update(env)
            os.environ.pop("OPENAI_API_KEY", None)  # the handler reads the key from the stack's secret
            secrets = boto3.client("secretsmanager")
            with contextlib.closing(secrets):
                secrets.put_secret_value(SecretId=stack.secret_arn, SecretString=key)
            from .. import runtime
            from ..handler import lambda_handler
            from ..settings import get_settings

            get_settings.cache_clear()
            on_ready(_describe(stack, local_aws.local_aws_env(endpoint, stack.region), base_url))
            try:
                with event_source.SqsEventSource.for_stack(stack) as source:
                    while not stop.is_set():
                        try:
                            source.poll_once(lambda_handler, wait_s=1)
                        except Exception as exc:  # Lambda delivers the message again; so does the event source
                            on_error(exc)
            finally:
                runtime.shutdown()
    finally:
        local_aws.stop_moto(server)


def _describe(stack: Any, aws_env: dict[str, str], base_url: str | None) -> LocalStack:
    env = {k: v for k, v in aws_env.items() if k != "AWS_EC2_METADATA_DISABLED"}
    env |= {
        "PROMPTDROP_TABLE": stack.table,
        "PROMPTDROP_BUCKET": stack.bucket,
        "PROMPTDROP_DLQ_URL": stack.dlq_url,
        "PROMPTDROP_WORK_QUEUE_URL": stack.work_queue_url,
        "PROMPTDROP_INPUT_PREFIX": stack.input_prefix,
    }
    return LocalStack(
        endpoint=stack.endpoint,
        openai_base_url=base_url,
        bucket=stack.bucket,
        table=stack.table,
        work_queue_url=stack.work_queue_url,
        dlq_url=stack.dlq_url,
        input_prefix=stack.input_prefix,
        output_prefix=stack.output_prefix,
        events_queue_url=stack.events_queue_url,
        env=env,
    )


def _print_ready(view: View, local: LocalStack, real_openai: bool) -> None:
    if view.json_mode:
        view.json(asdict(local))
        view.out.flush()
        return
    api = "the real OpenAI API" if real_openai else f"{local.openai_base_url} (fake OpenAI API)"
    view.fields(
        [
            ("AWS endpoint", f"{local.endpoint} (moto)"),
            ("OpenAI", api),
            ("input bucket", local.bucket),
            ("input prefix", local.input_prefix),
            ("outputs", f"s3://{local.bucket}/{local.output_prefix}<input key>.*"),
            ("jobs table", local.table),
            ("work queue", local.work_queue_url),
            ("dead letters", local.dlq_url),
            ("completion events", f"{local.events_queue_url} (one per job outcome)"),
        ],
        title="promptdrop local: the stack is up; Ctrl-C stops it",
    )
    view.line("\nin another shell:")
    view.line("  export " + " ".join(f"{k}={v}" for k, v in local.env.items()))
    view.line(f"  aws s3 cp prompts.jsonl s3://{local.bucket}/{local.input_prefix}prompts.jsonl")
    view.line("  promptdrop submit prompts.jsonl --wait    # or: promptdrop status")
    view.out.flush()


def add_parser(commands: Any, parent: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "local",
        parents=[parent],
        help="run the whole stack on this machine until Ctrl-C (moto, fake OpenAI API, the real handler)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    cmd.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"moto's port (default {DEFAULT_PORT}; 0: any)")
    cmd.add_argument("--latency-ms", type=float, default=50.0, help="the fake OpenAI API's latency (default 50)")
    cmd.add_argument("--real-openai", action="store_true", help="answer with the real API ($OPENAI_API_KEY)")
    cmd.add_argument("--verbose", action="store_true", help="show the handler's JSON logs and metrics")


def run(args: argparse.Namespace, view: View) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        view.note("stopping after the current invocation (Ctrl-C again: at once)")

    def on_error(exc: BaseException) -> None:
        view.note(f"the handler raised {exc!r}; the message will be delivered again")

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        serve(
            port=args.port,
            latency_ms=args.latency_ms,
            real_openai=args.real_openai,
            verbose=args.verbose,
            on_ready=lambda local: _print_ready(view, local, args.real_openai),
            stop=stop,
            on_error=on_error,
        )
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)
    view.note("promptdrop local: stopped")
    return ExitCode.OK
