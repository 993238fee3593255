"""``promptdrop local``: the whole stack on this machine, until Ctrl-C — a local drop-box.

A moto server with the resources ``template.yaml`` declares (bucket and its S3 → SQS notification,
work queue, dead-letter queue, table, secret), the fake OpenAI API (or, with ``--real-openai``, the
real one: ``OPENAI_API_KEY``), and Lambda's SQS event-source mapping played in-process: every
message on the work queue goes through the real handler, as in AWS. Files copied in with the AWS
CLI or ``promptdrop submit`` run; ``promptdrop status`` shows them.

What it holds — the names, every file, job, answer and queued message — is kept across restarts in a
state directory outside the checkout (``--state-dir``, else ``$PROMPTDROP_LOCAL_STATE_DIR``, else
``$XDG_STATE_HOME/promptdrop/local``, i.e. ``~/.local/state/promptdrop/local``): saved when it stops
(Ctrl-C, or SIGTERM), loaded when it starts. ``--fresh`` starts empty. Its names are the same at
every start (made from the stack's name), so the exports it prints stay good on the same ``--port``.
The API key is never saved: it is stored again at each start.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from .errors import CliError, ExitCode
from .view import View

__all__ = ["LocalStack", "add_parser", "default_state_dir", "run", "serve"]

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
    state_dir: str | None = None  # where it keeps its names and data across restarts (None: nowhere)
    kept: bool = False  # started from the state saved there by an earlier run


def default_state_dir() -> Path:
    """``$PROMPTDROP_LOCAL_STATE_DIR``, else ``promptdrop/local`` under ``$XDG_STATE_HOME`` (``~/.local/state``)."""
    if chosen := os.environ.get("PROMPTDROP_LOCAL_STATE_DIR"):
        return Path(chosen)
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "promptdrop" / "local"


def _infra() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """``infra.local_aws``, ``infra.fake_openai``, ``infra.event_source`` and ``infra.local_state``, from
    the source checkout."""
    root = Path(__file__).resolve().parents[3]  # functions/promptdrop/cli/local.py -> the checkout
    if (root / "infra" / "local_aws.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the console script does not run from the checkout
    try:
        from infra import event_source, fake_openai, local_aws, local_state
    except ImportError as exc:
        raise CliError(
            f"promptdrop local needs a source checkout installed with the dev extra ({exc}): "
            "git clone the repository, then pip install -e '.[dev]' in it"
        ) from None
    return local_aws, fake_openai, event_source, local_state


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
    state_dir: Path | None = None,
    fresh: bool = False,
    on_ready: Callable[[LocalStack], None],
    stop: threading.Event,
    on_error: Callable[[BaseException], None] = lambda exc: None,
    on_note: Callable[[str], None] = lambda text: None,
) -> None:
    """Run the local stack until ``stop`` is set; ``on_ready`` is called once it takes files.

    With a ``state_dir``, the stack saved there by an earlier run is loaded (unless ``fresh``), and
    the stack is saved there once it has stopped. Sets the function's environment in ``os.environ``
    (the handler reads its configuration there, as on Lambda): run it in a process of its own.
    """
    local_aws, fake_openai, event_source, local_state = _infra()
    import boto3

    try:
        server, endpoint = local_aws.start_moto(port)
    except OSError as exc:
        raise CliError(f"cannot listen on port {port} ({exc}): try another --port (0 picks a free one)") from None
    stack = None
    try:
        if state_dir is not None and not fresh:
            if (saved := state_dir / local_state.STATE_FILE).is_file():  # seconds for a few thousand answers
                size_mb = saved.stat().st_size / 1e6
                on_note(f"promptdrop local: loading the state kept in {state_dir} ({size_mb:.1f} MB)")
            try:
                stack = local_state.load(state_dir, endpoint)
            except local_state.StaleState as exc:
                on_note(f"promptdrop local: {exc}; starting afresh")
        kept = stack is not None
        stack = stack or local_aws.deploy(endpoint, stack_name=stack_name)
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
            described = _describe(stack, local_aws.local_aws_env(endpoint, stack.region), base_url)
            on_ready(replace(described, state_dir=None if state_dir is None else str(state_dir), kept=kept))
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
        if state_dir is not None and stack is not None:  # after the server stopped: nothing changes it now
            try:
                local_state.save(state_dir, stack)
            except Exception as exc:  # said, not raised: what stopped, stopped cleanly
                on_note(
                    f"promptdrop local: the state was not saved in {state_dir} ({exc!r}); what was saved before stays"
                )


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
            ("state", _state_cell(local)),
        ],
        title="promptdrop local: the stack is up; Ctrl-C stops it",
    )
    view.line("\nin another shell:")
    view.line("  export " + " ".join(f"{k}={v}" for k, v in local.env.items()))
    view.line(f"  aws s3 cp prompts.jsonl s3://{local.bucket}/{local.input_prefix}prompts.jsonl")
    view.line("  promptdrop submit prompts.jsonl --wait    # or: promptdrop status")
    view.out.flush()


def _state_cell(local: LocalStack) -> str:
    if local.state_dir is None:
        return "not kept"
    if local.kept:
        return f"{local.state_dir} (the names and data of the last run, kept; saved again when it stops)"
    return f"{local.state_dir} (new; saved when it stops, loaded at the next start)"


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
    cmd.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where its names and data are kept across restarts (default: $PROMPTDROP_LOCAL_STATE_DIR, "
        "else ~/.local/state/promptdrop/local)",
    )
    cmd.add_argument("--fresh", action="store_true", help="start empty (the state kept is replaced when it stops)")


def run(args: argparse.Namespace, view: View) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        view.note("stopping after the current invocation (Ctrl-C again: at once)")

    def on_error(exc: BaseException) -> None:
        view.note(f"the handler raised {exc!r}; the message will be delivered again")

    # SIGTERM (`kill`, a closing service manager) stops it as Ctrl-C does: the state is saved either way.
    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve(
            port=args.port,
            latency_ms=args.latency_ms,
            real_openai=args.real_openai,
            verbose=args.verbose,
            state_dir=args.state_dir or default_state_dir(),
            fresh=args.fresh,
            on_ready=lambda local: _print_ready(view, local, args.real_openai),
            stop=stop,
            on_error=on_error,
            on_note=view.note,
        )
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    view.note("promptdrop local: stopped")
    return ExitCode.OK
