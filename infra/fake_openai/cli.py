"""``python -m infra.fake_openai [flags]``: the fake OpenAI API from a shell, until SIGINT/SIGTERM.

It prints ``fake OpenAI API listening on http://HOST:PORT/v1`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence

from infra.fake_openai.config import FakeOpenAIConfig, ModelLimit
from infra.fake_openai.server import app_closing, create_app
from infra.threaded_server import serve_until_signalled, serving_site

__all__ = ["config_from_args", "main"]


def _model_limit(value: str) -> tuple[str, ModelLimit]:
    """``MODEL=RPM,TPM`` (either side may be empty: unlimited) -> ``(model, (rpm, tpm))``."""
    model, sep, limits = value.rpartition("=")
    rpm_text, comma, tpm_text = limits.partition(",")
    if not sep or not model or not comma:
        raise argparse.ArgumentTypeError(
            f"expected MODEL=RPM,TPM (e.g. gpt-4o=500,30000 or gpt-4o=,30000), got {value!r}"
        )
    try:
        rpm = int(rpm_text) if rpm_text.strip() else None
        tpm = int(tpm_text) if tpm_text.strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"RPM and TPM must be whole numbers or empty, got {value!r}") from None
    return model, (rpm, tpm)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infra.fake_openai",
        description="A fast, OpenAI-compatible fake OpenAI API (echo answers, limits, faults).",
    )
    d = FakeOpenAIConfig()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089, help="0 picks a free port (printed on the ready line)")
    p.add_argument("--latency-ms", type=float, default=d.latency_ms)
    p.add_argument("--jitter-ms", type=float, default=d.jitter_ms, help="uniform +/- around --latency-ms")
    p.add_argument("--rpm", type=int, default=None, help="requests per minute of each model (default: unlimited)")
    p.add_argument("--tpm", type=int, default=None, help="tokens per minute of each model (default: unlimited)")
    p.add_argument(
        "--model-limit",
        type=_model_limit,
        action="append",
        default=[],
        metavar="MODEL=RPM,TPM",
        help="this model's own limits instead of --rpm/--tpm (repeatable; an empty side is unlimited)",
    )
    p.add_argument(
        "--burst-s", type=float, default=d.burst_s, help="bucket capacity in seconds of the limit (60: a whole minute)"
    )
    p.add_argument("--fail-500-rate", type=float, default=d.fail_500_rate)
    p.add_argument("--fail-429-rate", type=float, default=d.fail_429_rate)
    p.add_argument("--hang-rate", type=float, default=d.hang_rate)
    p.add_argument("--hang-s", type=float, default=d.hang_s)
    p.add_argument("--malformed-rate", type=float, default=d.malformed_rate)
    p.add_argument(
        "--flex-unavailable-rate",
        type=float,
        default=d.flex_unavailable_rate,
        help="share of service_tier=flex requests refused with a 429 resource_unavailable",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--require-api-key", default=None, help="answer 401 unless 'Authorization: Bearer KEY'")
    p.add_argument(
        "--auth",
        choices=["bearer", "api-key", "bedrock"],
        default=d.auth,
        help="how the key is checked: bearer, api-key (Azure's header), bedrock (a token by --bedrock-access-key)",
    )
    p.add_argument("--bedrock-access-key", default=None, help="--auth bedrock: whose tokens are accepted")
    p.add_argument("--bedrock-region", default=None, help="--auth bedrock: the region tokens must be minted for")
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    p.add_argument("--fault-retry-after-ms", type=int, default=d.fault_retry_after_ms)
    p.add_argument(
        "--batch-answer-chars",
        type=int,
        default=d.batch_answer_chars,
        help="each batch answer's text: the prompt's echo repeated to this many characters (0: the echo alone)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> FakeOpenAIConfig:
    return FakeOpenAIConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        burst_s=args.burst_s,
        fail_500_rate=args.fail_500_rate,
        fail_429_rate=args.fail_429_rate,
        hang_rate=args.hang_rate,
        hang_s=args.hang_s,
        malformed_rate=args.malformed_rate,
        flex_unavailable_rate=args.flex_unavailable_rate,
        seed=args.seed,
        require_api_key=args.require_api_key,
        auth=args.auth,
        bedrock_access_key=args.bedrock_access_key,
        bedrock_region=args.bedrock_region,
        default_max_tokens=args.default_max_tokens,
        fault_retry_after_ms=args.fault_retry_after_ms,
        batch_answer_chars=args.batch_answer_chars,
        model_limits=dict(args.model_limit),
    )


def _serving(config: FakeOpenAIConfig, host: str, port: int) -> contextlib.AbstractAsyncContextManager[int]:
    app = create_app(config)
    return serving_site(app, host, port, backlog=4096, shutdown_timeout=5.0, before_cleanup=app_closing(app).set)


def _ready(host: str) -> Callable[[int], str]:
    shown_host = f"[{host}]" if ":" in host else host
    return lambda port: f"fake OpenAI API listening on http://{shown_host}:{port}/v1"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infra.fake_openai [flags]``: serve until SIGINT/SIGTERM."""
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve_until_signalled(_serving(config, args.host, args.port), _ready(args.host)))
    return 0
