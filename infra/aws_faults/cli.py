"""``python -m infra.aws_faults --target URL [flags]``: the proxy from a shell, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Final

from infra.aws_faults.config import AwsFaultsConfig, FaultRule, Outage
from infra.aws_faults.errors import FaultKind, Service, error_for
from infra.aws_faults.proxy import Proxy, service_arg, serving
from infra.aws_faults.state import FaultState
from infra.threaded_server import serve_until_signalled

__all__ = ["arg_parser", "config_from_args", "main"]


def _rate(value: str) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a probability within [0, 1]")
    return rate


def _outage_arg(value: str) -> Outage:
    try:
        service, after_calls, seconds = value.split(":")
        return Outage(float(seconds), service_arg(service), after_calls=int(after_calls))
    except ValueError as exc:
        message = f"{value!r}: {exc}; use SERVICE:AFTER_CALLS:SECONDS, e.g. dynamodb:100:3"
        raise argparse.ArgumentTypeError(message) from None


_KIND_FLAGS: Final = {
    "throttle": FaultKind.THROTTLE,
    "errors": FaultKind.SERVER_ERROR,
    "after-write": FaultKind.AFTER_WRITE,
}


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infra.aws_faults",
        description="An HTTP proxy in front of a moto server that answers a share of AWS calls the way AWS "
        "does when it struggles (throttling, 500s, failures after the write, outages).",
    )
    p.add_argument("--target", required=True, help="the moto server, e.g. http://127.0.0.1:5000")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001, help="0 picks a free port (printed on the ready line)")
    p.add_argument("--seed", type=int, default=None, help="the same faults on every run")
    for service in Service:
        for flag, kind in _KIND_FLAGS.items():
            p.add_argument(
                f"--{service}-{flag}",
                type=_rate,
                default=0.0,
                metavar="RATE",
                help=f"share of {service} calls answered with {error_for(service, kind).code}"
                + (" after forwarding them" if kind is FaultKind.AFTER_WRITE else ""),
            )
    p.add_argument(
        "--dynamodb-unprocessed",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="share of BatchWriteItem calls that write only some items and return the rest as UnprocessedItems",
    )
    p.add_argument(
        "--outage",
        type=_outage_arg,
        action="append",
        default=[],
        metavar="SERVICE:AFTER_CALLS:SECONDS",
        help="every call to SERVICE (s3, dynamodb, sqs or all) fails for SECONDS once it has seen AFTER_CALLS calls",
    )
    return p


def config_from_args(args: argparse.Namespace) -> AwsFaultsConfig:
    rules = [
        FaultRule(kind, getattr(args, f"{service}_{flag.replace('-', '_')}"), service=service)
        for service in Service
        for flag, kind in _KIND_FLAGS.items()
        if getattr(args, f"{service}_{flag.replace('-', '_')}") > 0
    ]
    if args.dynamodb_unprocessed > 0:
        rules.append(FaultRule(FaultKind.UNPROCESSED, args.dynamodb_unprocessed, service=Service.DYNAMODB))
    return AwsFaultsConfig(rules=rules, outages=args.outage, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m infra.aws_faults --target URL [flags]``: serve until SIGINT/SIGTERM."""
    args = arg_parser().parse_args(argv)
    proxy = Proxy(args.target, FaultState(config_from_args(args), time.monotonic), own_hosts=(args.host, "localhost"))
    listening = f"AWS fault proxy listening on http://{args.host}:{{}}, forwarding to {args.target}"
    asyncio.run(serve_until_signalled(serving(proxy, args.host, args.port), listening.format))
    return 0
